"""Two classic distillation results, reproduced on data that ships offline (notebook 09).

* Hinton, Vinyals & Dean (2015) on scikit-learn's 1,797 handwritten 8×8 digits: a large regularised
  teacher, a small net on labels, the same small net distilled at a high temperature, and a student that
  never sees the digit 3 (``run_hinton``).
* Lopez-Paz, Bottou, Schölkopf & Vapnik (2016, section 5): the four synthetic experiments on privileged
  information, with logistic-regression teachers and students (``privileged_data``, ``run_lopez_paz``).

``python -m mmkd_utils.classic --out results/classic`` writes the full runs (``results.json`` and
``results.md``); notebook 09 runs a smaller version live and checks it against them.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import SPLITS, random_split
from .objective import Objective
from .train import TrainConfig, fit, predict

# What the papers report. Hinton et al. 2015, section 3: MNIST test errors out of 10,000.
HINTON_PAPER = {"test_size": 10_000, "teacher": 67, "small": 146, "distilled": 74, "threes": 1010,
                "omit3_before": {"errors": 206, "errors_on_3": 133}, "bias_shift": 3.5,
                "omit3_after": {"errors": 109, "errors_on_3": 14}}
# Lopez-Paz et al. 2016, section 5 (in the text, not a figure): test accuracy in %, mean ± std over 100 runs.
LOPEZ_PAZ_PAPER = {1: {"teacher": (96, 0), "student": (88, 1), "distilled": (95, 1)},
                   2: {"teacher": (90, 1), "student": (68, 1), "distilled": (70, 1)},
                   3: {"teacher": (98, 0), "student": (89, 1), "distilled": (97, 1)},
                   4: {"teacher": (96, 2), "student": (55, 3), "distilled": (56, 4)}}
EXPERIMENTS = {1: "clean labels as PI", 2: "clean features as PI", 3: "relevant features as PI",
               4: "sample-dependent relevant features as PI"}


# ----------------------------------------------------------------------------- Hinton et al. (2015)
def load_digits_dataset(seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)):
    """scikit-learn's 1,797 real 8×8 handwritten digits as an image dataset with a ``label`` column."""
    import datasets
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images / 16.0 * 255).round().astype(np.uint8)
    split_of = random_split(len(pixels), seed, fractions)
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[str(d) for d in range(10)])})
    return datasets.DatasetDict({
        s: datasets.Dataset.from_dict(
            {"image": [Image.fromarray(pixels[i], mode="L") for i, sp in enumerate(split_of) if sp == s],
             "label": [int(digits.target[i]) for i, sp in enumerate(split_of) if sp == s]}, features=features)
        for s in SPLITS})


def digits_splits(seed: int, fractions: tuple[float, float] = (0.6, 0.2)) -> dict[str, dict[str, torch.Tensor]]:
    """scikit-learn's digits split at random into train / validation / test by ``seed`` (notebook 09):
    ``{split: {"pixels": (N, 64) in [0, 1], "label": (N,)}}``, 60 / 20 / 20 % by default."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    n_train, n_val = (round(f * len(order)) for f in fractions)
    parts = {"train": order[:n_train], "validation": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    return {name: {"pixels": torch.tensor(digits.data[rows] / 16.0, dtype=torch.float32),
                   "label": torch.tensor(digits.target[rows], dtype=torch.long)} for name, rows in parts.items()}


class DigitsMLP(nn.Module):
    """An MLP over the 64 pixels of a digit (notebook 09): ``forward(batch)`` reads ``batch["pixels"]``
    (B, 64) and returns logits (B, 10); ``dropout`` acts on every hidden layer."""

    inputs = ("pixels",)

    def __init__(self, hidden: tuple[int, ...], dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = 64
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
            width = size
        self.net = nn.Sequential(*layers, nn.Linear(width, 10))

    def forward(self, batch: dict) -> torch.Tensor:
        return self.net(batch["pixels"])


def jitter(batch: dict, generator: torch.Generator, max_shift: float = 0.5) -> dict:
    """Translate each 8×8 digit by a random sub-pixel shift of up to ``max_shift`` pixels in x and in y
    (bilinear, zeros coming in; notebook 09): Hinton et al.'s jitter of up to 2 of 28 pixels, scaled to 8.
    Called by ``fit(augment=...)`` with the epoch's generator."""
    n = batch["pixels"].shape[0]
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift * 2 / 8  # in grid units: 2 per 8 pixels
    theta = torch.cat([torch.eye(2).expand(n, 2, 2), shift[:, :, None]], dim=2)  # (B, 2, 3)
    images = batch["pixels"].view(n, 1, 8, 8)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return {**batch, "pixels": F.grid_sample(images, grid, align_corners=False).reshape(n, 64)}


def errors(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Number of rows whose arg-max class is not the label (notebook 09)."""
    return int((logits.argmax(1) != labels).sum())


def choose_bias_shift(logits: torch.Tensor, labels: torch.Tensor, cls: int,
                      grid: torch.Tensor | None = None) -> float:
    """The shift of class ``cls``'s logit (its bias) from ``grid`` that makes the fewest errors on these
    rows: pass the *validation* split, never the test split (notebook 09). Ties go to the smallest shift."""
    grid = torch.arange(0.0, 15.01, 0.25) if grid is None else grid
    counts = [errors(logits + shift * F.one_hot(torch.tensor(cls), logits.shape[1]), labels) for shift in grid]
    return float(grid[int(np.argmin(counts))])


# The reproduction's choices: a teacher with dropout and jitter, an unregularised small net, T = 20 as in the
# paper's MNIST runs and T = 4 as it advises for small nets; α weights the soft term (T²·KL), 1 − α the labels.
HINTON_SETUP = {"teacher": dict(hidden=(256, 256), dropout=0.5), "jitter": 0.5, "small": dict(hidden=(64, 64)),
                "temperatures": (20.0, 4.0), "alpha": 0.9, "omitted": 3, "omitted_T": 20.0,
                "teacher_train": dict(epochs=60, lr=3e-3, weight_decay=1e-4, batch_size=128),
                "student_train": dict(epochs=60, lr=3e-3, weight_decay=0.0, batch_size=128)}


def train_digits_teacher(train: dict, seed: int, setup: dict = HINTON_SETUP) -> DigitsMLP:
    """Hinton et al.'s regularised teacher on the digits (notebook 09): dropout, jittered inputs, weight decay."""
    torch.manual_seed(seed)
    teacher = DigitsMLP(**setup["teacher"])
    fit(teacher, train, config=TrainConfig(seed=seed, device="cpu", **setup["teacher_train"]),
        augment=lambda batch, generator: jitter(batch, generator, setup["jitter"]))
    return teacher


def train_digits_student(transfer: dict, seed: int, T: float | None = None, setup: dict = HINTON_SETUP) -> DigitsMLP:
    """The small net (notebook 09), unregularised: on the labels alone if ``T`` is None, else distilled from
    ``transfer["teacher_logits"]`` at temperature ``T`` with weight ``setup["alpha"]`` on the soft term."""
    torch.manual_seed(seed)
    student = DigitsMLP(**setup["small"])
    objective = None if T is None else Objective(kind="soft", T=T, alpha=setup["alpha"])
    fit(student, transfer, objective=objective, config=TrainConfig(seed=seed, device="cpu", **setup["student_train"]))
    return student


def run_hinton(seed: int, setup: dict = HINTON_SETUP) -> dict:
    """One repetition of Hinton et al.'s digit experiments on split ``seed`` (notebook 09): test errors of
    the teacher, the small net on labels, the small net distilled at each temperature, and the student whose
    transfer set lacks the ``omitted`` digit, before and after the bias shift chosen on validation."""
    data = digits_splits(seed)
    train, val, test = data["train"], data["validation"], data["test"]
    teacher = train_digits_teacher(train, seed, setup)
    transfer = {**train, "teacher_logits": predict(teacher, train, device="cpu")}  # (N, 10), no jitter, no dropout
    models = {"teacher": teacher, "small": train_digits_student(train, seed, None, setup)}
    for T in setup["temperatures"]:
        models[f"distilled T={T:g}"] = train_digits_student(transfer, seed, T, setup)
    kept = transfer["label"] != setup["omitted"]
    omitted = train_digits_student({k: v[kept] for k, v in transfer.items()}, seed, setup["omitted_T"], setup)
    shift = choose_bias_shift(predict(omitted, val, device="cpu"), val["label"], setup["omitted"])
    before = predict(omitted, test, device="cpu")
    after = before + shift * F.one_hot(torch.tensor(setup["omitted"]), 10)
    is_omitted = test["label"] == setup["omitted"]
    row = {"seed": seed, "test_size": len(test["label"]), "omitted_in_test": int(is_omitted.sum()), "bias_shift": shift,
           **{name: errors(predict(model, test, device="cpu"), test["label"]) for name, model in models.items()}}
    for key, logits in [("omit_before", before), ("omit_after", after)]:
        row[key], row[key + "_on_omitted"] = errors(logits, test["label"]), errors(logits[is_omitted], test["label"][is_omitted])
    return row


# ----------------------------------------------------------------------- Lopez-Paz et al. (2016)
# The settings run: experiment 1-4 as the paper's text describes them, and experiment 4 as the released code does.
SETTINGS = {"1": (1, "paper"), "2": (2, "paper"), "3": (3, "paper"), "4": (4, "paper"), "4 (released code)": (4, "released")}


def privileged_data(experiment: int, n: int, alpha: torch.Tensor, generator: torch.Generator,
                    variant: str = "paper", relevant: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triplets (x (n, d), x* (n, d*), y (n,)) of Lopez-Paz et al.'s synthetic ``experiment`` 1–4 (notebook 09),
    with separating hyperplane ``alpha`` (d,) and, for experiment 3, the relevant set J = ``relevant`` (3,),
    shared by all samples. ``variant="released"`` (experiment 4 only) follows the authors' released code,
    not the paper's text: one J per generated data set, weights α_1:3, labels thresholded at their median."""
    d = alpha.shape[0]
    if experiment not in EXPERIMENTS or variant not in ("paper", "released"):
        raise ValueError(f"experiment must be 1-4 and variant 'paper' or 'released', got {experiment}, {variant!r}")
    if experiment == 3 and relevant is None:
        raise ValueError("experiment 3 needs relevant=J, the 3 indices shared by the training and test samples")
    if experiment == 2:
        x_star = torch.randn(n, d, generator=generator)
        x = x_star + torch.randn(n, d, generator=generator)
        return x, x_star, (x_star @ alpha > 0).long()
    x = torch.randn(n, d, generator=generator)
    if experiment == 1:
        x_star = (x @ alpha)[:, None]
        return x, x_star, (x_star[:, 0] + torch.randn(n, generator=generator) > 0).long()
    if experiment == 3:
        J = relevant.expand(n, 3)
    elif variant == "released":  # one J for this data set: the test set gets another one
        J = torch.randperm(d, generator=generator)[:3].expand(n, 3)
    else:  # a J_i for every sample
        J = torch.rand(n, d, generator=generator).argsort(dim=1)[:, :3]
    x_star = x.gather(1, J)  # (n, 3)
    if variant == "released":
        score = x_star @ alpha[:3]
        return x, x_star, (score > score.median()).long()
    return x, x_star, ((x_star * alpha[J]).sum(1) > 0).long()


def draw_problem(setting: str, repetition: int, seed: int = 0, n_train: int = 200, n_test: int = 10_000,
                 d: int = 50, test: bool = True) -> tuple:
    """One repetition of a ``SETTINGS`` entry (notebook 09): α ~ N(0, I_d), J, then the training triplets and,
    if ``test``, the test triplets; the same arguments always give the same draw."""
    experiment, variant = SETTINGS[setting]
    generator = torch.Generator().manual_seed(seed * 1_000_003 + list(SETTINGS).index(setting) * 10_007 + repetition)
    alpha = torch.randn(d, generator=generator)
    relevant = torch.randperm(d, generator=generator)[:3]
    train = privileged_data(experiment, n_train, alpha, generator, variant, relevant)
    return (train, privileged_data(experiment, n_test, alpha, generator, variant, relevant)) if test else train


def fit_logistic(x: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                 T: float = 1.0, imitation: float = 0.0, epochs: int = 1000, batch_size: int = 128,
                 lr: float = 1e-3, seed: int = 0, fan_in: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class softmax regressions, one per problem, trained at once (notebook 09): ``x`` (P, n, d),
    ``labels`` (P, n). Minimises eq. (4) of Lopez-Paz et al., (1 − λ)·CE(y) + λ·T²·KL(σ(t/T) ‖ σ(z/T)) with
    λ = ``imitation`` (``Objective(kind="soft")``), unregularised, by RMSprop as the authors' code did (1,000
    epochs, batches of 128, Glorot-uniform weights for ``fan_in`` (P,) true inputs; zero-padded columns stay
    inert). Returns weights (P, d, 2) and biases (P, 1, 2)."""
    P, n, d = x.shape
    generator = torch.Generator().manual_seed(seed)
    fan_in = torch.full((P,), d) if fan_in is None else fan_in
    bound = (6 / (fan_in.double() + 2)).sqrt().float()[:, None, None]  # Keras' Glorot uniform; zero biases
    weight = ((torch.rand(P, d, 2, generator=generator) * 2 - 1) * bound).requires_grad_()
    bias = torch.zeros(P, 1, 2, requires_grad=True)
    objective = Objective(kind="soft" if teacher_logits is not None else "ce", T=T, alpha=imitation)
    optimizer = torch.optim.RMSprop([weight, bias], lr=lr, alpha=0.9, eps=1e-6)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            logits = torch.baddbmm(bias, x[:, rows], weight)  # (P, b, 2)
            batch = {"label": labels[:, rows].reshape(-1)}
            if teacher_logits is not None:
                batch["teacher_logits"] = teacher_logits[:, rows].reshape(-1, 2)
            loss = objective.terms(logits.reshape(-1, 2), batch)["total"] * P  # a sum of P independent means
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return weight.detach(), bias.detach()


def run_lopez_paz(repetitions: int, settings: tuple[str, ...] = tuple(SETTINGS), seed: int = 0, T: float = 1.0,
                  imitation: float = 1.0, epochs: int = 1000, n_train: int = 200, n_test: int = 10_000,
                  d: int = 50) -> dict[str, dict[str, list[float]]]:
    """Test accuracy of the teacher (on x*), the student (on x) and the distilled student (on x, λ =
    ``imitation``, temperature ``T``) for each setting and repetition (notebook 09); features are standardised
    with the training rows' mean and std, as the authors' code did. {setting: {learner: [accuracy]}}."""
    problems = [(s, r) for s in settings for r in range(repetitions)]
    sizes = dict(seed=seed, n_train=n_train, n_test=n_test, d=d)
    trains = [draw_problem(s, r, test=False, **sizes) for s, r in problems]
    pad = lambda star: F.pad(star, (0, d - star.shape[-1]))  # noqa: E731  (n, d*) -> (n, d)
    x, star = torch.stack([t[0] for t in trains]), torch.stack([pad(t[1]) for t in trains])  # (P, n, d)
    labels = torch.stack([t[2] for t in trains])
    stats = {name: (v.mean(1, keepdim=True), v.std(1, keepdim=True).clamp_min(1e-8)) for name, v in [("x", x), ("star", star)]}
    scale = lambda name, v, i=slice(None): (v - stats[name][0][i]) / stats[name][1][i]  # noqa: E731
    fan_in = torch.tensor([t[1].shape[1] for t in trains])
    teacher = fit_logistic(scale("star", star), labels, epochs=epochs, seed=seed, fan_in=fan_in)
    student = fit_logistic(scale("x", x), labels, epochs=epochs, seed=seed)
    soft = torch.baddbmm(teacher[1], scale("star", star), teacher[0])  # the teacher's logits on the training rows
    distilled = fit_logistic(scale("x", x), labels, soft, T=T, imitation=imitation, epochs=epochs, seed=seed)
    results = {s: {"teacher": [], "student": [], "distilled": []} for s in settings}
    for i, (s, r) in enumerate(problems):
        _, (x_test, star_test, y_test) = draw_problem(s, r, **sizes)
        for name, (w, b), inputs in [("teacher", teacher, scale("star", pad(star_test), i)),
                                     ("student", student, scale("x", x_test, i)), ("distilled", distilled, scale("x", x_test, i))]:
            results[s][name].append(((inputs @ w[i] + b[i]).argmax(1) == y_test).float().mean().item())
    return results


# ---------------------------------------------------------------------------------- full runs
def mean_std(values: list[float]) -> dict:
    """{"mean", "std", "n"} of ``values`` (population std, as the papers report; notebook 09)."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def summarise(hinton_rows: list[dict], lopez_paz: dict[str, dict[str, list[float]]]) -> dict:
    """The tables of a full run (notebook 09): Hinton errors per model (count and % of the test split), the
    omitted-digit student, and Lopez-Paz accuracies (%) per setting and learner, each as ``mean_std``."""
    size = hinton_rows[0]["test_size"]
    keys = [k for k in hinton_rows[0] if k not in ("seed", "test_size")]
    hinton = {k: mean_std([r[k] for r in hinton_rows]) for k in keys}
    hinton.update({f"{k} %": mean_std([100 * r[k] / size for r in hinton_rows]) for k in keys if "omitted" not in k and k != "bias_shift"})
    hinton["omitted accuracy before %"] = mean_std([100 * (1 - r["omit_before_on_omitted"] / r["omitted_in_test"]) for r in hinton_rows])
    hinton["omitted accuracy after %"] = mean_std([100 * (1 - r["omit_after_on_omitted"] / r["omitted_in_test"]) for r in hinton_rows])
    return {"hinton": hinton, "lopez_paz": {s: {k: mean_std([100 * a for a in v]) for k, v in learners.items()}
                                             for s, learners in lopez_paz.items()}}


def markdown(table: dict, hinton_rows: list[dict]) -> str:
    """``results.md``: the two tables of ``summarise`` beside the papers' numbers (notebook 09)."""
    cell = lambda m, digits=1: f"{m['mean']:.{digits}f} ± {m['std']:.{digits}f}"  # noqa: E731
    h, size = table["hinton"], hinton_rows[0]["test_size"]
    lines = [f"## Hinton et al. (2015) on scikit-learn's digits ({len(hinton_rows)} splits, {size} test digits each)", "",
             f"| model | test errors (of {size}) | test error % | paper: MNIST errors (of 10,000) |", "|---|---|---|---|"]
    paper = {"teacher": HINTON_PAPER["teacher"], "small": HINTON_PAPER["small"], "distilled T=20": HINTON_PAPER["distilled"],
             "omit_before": HINTON_PAPER["omit3_before"]["errors"], "omit_after": HINTON_PAPER["omit3_after"]["errors"]}
    for key in [k for k in h if f"{k} %" in h]:
        lines.append(f"| {key} | {cell(h[key])} | {cell(h[key + ' %'], 2)} | {paper.get(key, '–')} |")
    lines += ["", f"Omitted digit {HINTON_SETUP['omitted']}: accuracy on it {cell(h['omitted accuracy before %'])} % before "
              f"and {cell(h['omitted accuracy after %'])} % after a bias shift of {cell(h['bias_shift'], 2)} chosen on validation "
              "(paper: 133 of 1,010 threes wrong before, 14 after a shift of 3.5 chosen on test).", "",
              "## Lopez-Paz et al. (2016), section 5: test accuracy %, λ = T = 1", "",
              "| experiment | teacher | student | distilled | paper: teacher / student / distilled |", "|---|---|---|---|---|"]
    for setting, learners in table["lopez_paz"].items():
        experiment, variant = SETTINGS[setting]
        ref = " / ".join(f"{m} ± {s}" for m, s in LOPEZ_PAZ_PAPER[experiment].values())
        name = f"{experiment}. {EXPERIMENTS[experiment]}" + (", as the released code draws it" if variant == "released" else "")
        lines.append(f"| {name} | " + " | ".join(cell(learners[k]) for k in ("teacher", "student", "distilled"))
                     + f" | {ref} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """``python -m mmkd_utils.classic --out results/classic``: the full runs of notebook 09, written as
    ``results.json`` (every repetition, the tables, the settings, the time) and ``results.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/classic")
    parser.add_argument("--hinton_seeds", type=int, default=20)
    parser.add_argument("--lopez_paz_repetitions", type=int, default=100)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    hinton_rows = [run_hinton(seed) for seed in range(args.hinton_seeds)]
    lopez_paz = run_lopez_paz(args.lopez_paz_repetitions)
    table = summarise(hinton_rows, lopez_paz)
    result = {"command": f"python -m mmkd_utils.classic --out {args.out} --hinton_seeds {args.hinton_seeds} "
                         f"--lopez_paz_repetitions {args.lopez_paz_repetitions}",
              "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__,
              "hinton": {"setup": HINTON_SETUP, "paper": HINTON_PAPER, "rows": hinton_rows},
              "lopez_paz": {"paper": {str(k): v for k, v in LOPEZ_PAZ_PAPER.items()}, "accuracy": lopez_paz,
                            "T": 1.0, "imitation": 1.0, "n_train": 200, "n_test": 10_000, "d": 50},
              "table": table}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf8")
    (out / "results.md").write_text(markdown(table, hinton_rows), encoding="utf8")
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} in {result['seconds']} s")
    return result


if __name__ == "__main__":
    main()
