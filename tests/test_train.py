"""The training loop: determinism, resume, caching, objectives, guards."""
import pytest
import torch

from mmkd_utils import losses
from mmkd_utils.models import FusionClassifier, ImageCNN
from mmkd_utils.objective import Objective
from mmkd_utils.signals import cache_teacher_outputs
from mmkd_utils.train import NonFiniteLossError, TrainConfig, batches, fit, predict
from mmkd_utils.views import cached_view_augment, shift_augment


def blobs(n=240, dim=8, classes=3, seed=0):
    """Three Gaussian blobs: a task any working loop learns to > 90 % accuracy."""
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 3  # shared by all splits
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    x = centers[labels] + torch.randn(n, dim, generator=g)
    return {"x": x, "label": labels, "index": torch.arange(n)}


def model(dim=8, classes=3):
    return FusionClassifier({"x": dim}, classes, hidden=16, dropout=0.1)


FAST = TrainConfig(epochs=5, lr=1e-2, batch_size=32)


def weights(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_learns_a_separable_task():
    train, val = blobs(seed=0), blobs(seed=1)
    torch.manual_seed(0)
    m = model()
    hist = fit(m, train, val, config=FAST)
    assert hist.epochs[-1]["val_acc"] > 0.9
    assert len(hist.epochs) == FAST.epochs and hist.best_epoch >= 0


def test_same_seed_gives_bit_identical_weights_and_history():
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = model()
        hist = fit(m, blobs(), blobs(seed=1), config=FAST)
        runs.append((weights(m), hist.epochs))
    (w1, h1), (w2, h2) = runs
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert [e["val_acc"] for e in h1] == [e["val_acc"] for e in h2]
    assert [e["train_total"] for e in h1] == [e["train_total"] for e in h2]


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    torch.manual_seed(0)
    reference = model()
    ref_hist = fit(reference, blobs(), blobs(seed=1), config=FAST)

    import mmkd_utils.train as train_module

    real_epoch = train_module.train_epoch

    def dies_in_epoch_3(model, train, objective, optimizer, config, epoch, **kwargs):
        if epoch == 3:  # the process is killed two batches into epoch 3
            done = []

            def augment(batch, gen):
                if len(done) == 2:
                    raise KeyboardInterrupt("killed")
                done.append(batch)
                return batch

            kwargs["augment"] = augment
        return real_epoch(model, train, objective, optimizer, config, epoch, **kwargs)

    torch.manual_seed(0)
    m = model()
    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(train_module, "train_epoch", dies_in_epoch_3)
        fit(m, blobs(), blobs(seed=1), config=FAST, checkpoint_dir=tmp_path)
    assert (tmp_path / "state.safetensors").exists() and not list(tmp_path.glob("*.tmp"))
    resumed = model()  # a fresh process would build a fresh model
    hist = fit(resumed, blobs(), blobs(seed=1), config=FAST, checkpoint_dir=tmp_path, resume=True)
    assert all(torch.equal(v, weights(reference)[k]) for k, v in weights(resumed).items())
    assert [e["val_acc"] for e in hist.epochs] == [e["val_acc"] for e in ref_hist.epochs]


def test_resume_refuses_another_architecture(tmp_path):
    fit(model(), blobs(), blobs(seed=1), config=TrainConfig(epochs=1), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="another model or configuration"):
        fit(model(dim=8, classes=3).__class__({"x": 8}, 3, hidden=32), blobs(), config=TrainConfig(epochs=1),
            checkpoint_dir=tmp_path, resume=True)


def test_cached_teacher_logits_train_exactly_like_an_online_teacher():
    train = blobs()
    torch.manual_seed(1)
    teacher = model()
    fit(teacher, train, config=FAST)
    cached = {**train, **cache_teacher_outputs(teacher, train)}
    objective = Objective("soft", T=2.0, alpha=0.7)
    runs = []
    for data, online in ((cached, None), (train, teacher)):
        torch.manual_seed(0)
        student = model()
        fit(student, data, objective=objective, config=FAST, teacher=online)
        runs.append(weights(student))
    assert all(torch.allclose(runs[0][k], runs[1][k], atol=1e-6) for k in runs[0])


def test_unlabelled_rows_learn_only_from_the_teacher():
    train = blobs()
    torch.manual_seed(1)
    teacher = model()
    fit(teacher, train, config=FAST)
    data = {**train, **cache_teacher_outputs(teacher, train)}
    data["label"] = torch.full_like(train["label"], -1)  # no labels at all
    student = model()
    fit(student, data, objective=Objective("soft", T=1.0, alpha=0.5), config=FAST)
    agree = (predict(student, train).argmax(1) == predict(teacher, train).argmax(1)).float().mean()
    assert agree > 0.9
    with pytest.raises(ValueError, match="no labelled rows"):
        fit(model(), data, config=TrainConfig(epochs=1))


def test_nan_loss_stops_with_the_step_and_term():
    data = blobs()
    data["x"][5, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, batch \d+ \(ce=nan"):
        fit(model(), data, config=TrainConfig(epochs=1, batch_size=16))


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "soft", "T": 0.0}, "temperature"), ({"kind": "soft", "T": -1.0}, "temperature"),
    ({"kind": "soft", "alpha": 1.5}, r"alpha must be in \[0, 1\]"), ({"kind": "kl"}, "Objective.kind"),
    ({"kind": "ce", "feature_weight": 1.0}, "feature_loss"),
])
def test_objective_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Objective(**kwargs)


def test_distillation_without_teacher_outputs_says_how_to_fix():
    with pytest.raises(KeyError, match="teacher_logits"):
        fit(model(), blobs(), objective=Objective("soft"), config=TrainConfig(epochs=1))


def test_convex_objective_weights_terms_as_documented():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    batch = {"label": torch.tensor([0, 1]), "teacher_logits": teacher}
    terms = Objective("soft", T=2.0, alpha=0.25).terms(logits, batch)
    ce = torch.nn.functional.cross_entropy(logits, batch["label"])
    p = (teacher / 2).softmax(1)
    kl = (p * (p.log() - (logits / 2).log_softmax(1))).sum(1).mean() * 4
    assert torch.allclose(terms["total"], 0.75 * ce + 0.25 * kl)
    additive = Objective("soft", T=2.0, alpha=0.25, form="additive").terms(logits, batch)
    assert torch.allclose(additive["total"], ce + 0.25 * kl)


def test_batches_cover_every_row_once():
    data = blobs(n=70)
    seen = torch.cat([b["index"] for b in batches(data, 16, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(70))
    with pytest.raises(ValueError, match="same number of rows"):
        list(batches({"x": torch.zeros(3, 1), "label": torch.zeros(4)}, 2))


def test_shift_augment_moves_pixels_and_keeps_shape():
    x = torch.zeros(2, 3, 8, 8)
    x[:, :, 4, 4] = 1.0
    gen = torch.Generator().manual_seed(0)
    out = shift_augment(max_shift=2)({"image": x, "label": torch.zeros(2)}, gen)["image"]
    assert out.shape == x.shape
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)))  # the dot moved, not lost (it is far from the border)
    same = shift_augment(max_shift=0)({"image": x, "label": torch.zeros(2)}, gen)["image"]
    assert torch.equal(same, x)


def test_cached_view_augment_pairs_view_and_teacher_logits():
    n, views = 5, 3
    images = torch.arange(n * views).float().view(n, views, 1).expand(n, views, 4)
    logits = torch.arange(n * views).float().view(n, views, 1).expand(n, views, 2)
    out = cached_view_augment()({"image": images, "teacher_logits": logits, "label": torch.zeros(n)},
                                torch.Generator().manual_seed(0))
    assert out["image"].shape == (n, 4) and out["teacher_logits"].shape == (n, 2)
    assert torch.equal(out["image"][:, 0], out["teacher_logits"][:, 0])


def test_image_student_runs_through_the_loop_with_augmentation():
    g = torch.Generator().manual_seed(0)
    data = {"image": torch.randn(40, 3, 16, 16, generator=g), "label": torch.arange(40) % 2, "index": torch.arange(40)}
    hist = fit(ImageCNN(2, width=4), data, data, config=TrainConfig(epochs=2, batch_size=8), augment=shift_augment(2))
    assert len(hist.epochs) == 2 and 0.0 <= hist.epochs[-1]["val_acc"] <= 1.0


def hand_written_loop(model, train, objective, config):
    """The loop notebook 05 shows: public names only, no more than 25 lines."""
    import math

    from mmkd_utils.train import epoch_generator, make_scheduler

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, config, math.ceil(len(train["label"]) / config.batch_size))
    model.train()
    for epoch in range(config.epochs):
        rows = batches(train, config.batch_size, shuffle=True, generator=epoch_generator(config.seed, epoch))
        for batch in rows:
            loss = objective.terms(model(batch), batch)["total"]
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
    return model


def test_a_hand_written_loop_gives_bit_identical_weights_to_fit():
    import ast
    import inspect

    source = inspect.getsource(hand_written_loop)
    assert len(source.strip().splitlines()) <= 25
    names = {n.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
    assert not [n for n in names if n.startswith("_")], "the loop uses a private name"
    train = blobs()
    torch.manual_seed(1)
    teacher = model()
    fit(teacher, train, config=TrainConfig(epochs=2))
    train = {**train, **cache_teacher_outputs(teacher, train)}
    objective, config = Objective("soft", T=2.0, alpha=0.7), TrainConfig(epochs=3, lr=1e-2, batch_size=32, seed=5)
    torch.manual_seed(0)
    by_fit = model()  # dropout 0.1: the loop must consume the RNG exactly as fit does
    fit(by_fit, train, None, objective, config)
    torch.manual_seed(0)
    by_hand = hand_written_loop(model(), train, objective, config)
    assert all(torch.equal(v, by_fit.state_dict()[k]) for k, v in by_hand.state_dict().items())


def test_train_epoch_is_what_fit_repeats():
    from mmkd_utils.train import make_optimizer, make_scheduler, train_epoch

    config = TrainConfig(epochs=2, lr=1e-2, batch_size=32, scheduler="none")
    torch.manual_seed(0)
    by_fit = model()
    history = fit(by_fit, blobs(), None, Objective(), config)
    torch.manual_seed(0)
    by_epoch = model()
    optimizer = make_optimizer(by_epoch, Objective(), config)
    assert make_scheduler(optimizer, config, 8) is None
    records = [train_epoch(by_epoch, blobs(), Objective(), optimizer, config, epoch) for epoch in range(2)]
    assert all(torch.equal(v, by_fit.state_dict()[k]) for k, v in by_epoch.state_dict().items())
    assert [r["train_total"] for r in records] == history.column("train_total")


@pytest.mark.parametrize("make_loss", [
    lambda: losses.FitNetHint(16, 6),
    lambda: losses.ContrastiveHint(16, 6),
    lambda: losses.rkd_distance_loss,
    lambda: losses.rkd_angle_loss,
    lambda: losses.pkt_loss,
], ids=["fitnet", "contrastive", "rkd-distance", "rkd-angle", "pkt"])
def test_any_feature_loss_trains_through_fit(make_loss):
    train = {**blobs(n=64), "teacher_feat": torch.randn(64, 6, generator=torch.Generator().manual_seed(0))}
    feature_loss = make_loss()
    torch.manual_seed(0)
    student = model()  # FusionClassifier: embed (B, 16) and head
    before = {k: v.clone() for k, v in student.state_dict().items()}
    adapter_before = [p.clone() for p in getattr(feature_loss, "parameters", lambda: [])()]
    history = fit(student, train, None, Objective("ce", feature_weight=1.0, feature_loss=feature_loss),
                  TrainConfig(epochs=1, batch_size=32))
    assert history.epochs[0]["train_feature"] > 0 and torch.isfinite(torch.tensor(history.epochs[0]["train_total"]))
    assert any(not torch.equal(v, before[k]) for k, v in student.state_dict().items())
    for p, q in zip(getattr(feature_loss, "parameters", lambda: [])(), adapter_before):
        assert not torch.equal(p, q)  # a module's parameters (the adapter) train with the student


def test_objective_uses_the_one_rule_for_alpha():
    Objective("soft", alpha=2.0, form="additive")  # the source article's form: any α ≥ 0
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        Objective("soft", alpha=2.0)
    with pytest.raises(TypeError, match="callable"):
        Objective("ce", feature_weight=1.0, feature_loss="fitnet")
    logits, batch = torch.tensor([[2.0, 0.0, -1.0]]), {"label": torch.tensor([0]), "teacher_logits": torch.tensor([[0.0, 1.0, 0.0]])}
    terms = Objective("soft", T=2.0, alpha=2.0, form="additive").terms(logits, batch)
    assert torch.allclose(terms["total"], terms["ce"] + 2.0 * terms["distill"])


def test_resuming_a_run_that_stopped_early_trains_no_more(tmp_path):
    config = TrainConfig(epochs=40, lr=1e-2, batch_size=32, patience=2)
    torch.manual_seed(0)
    m = model()
    first = fit(m, blobs(), blobs(seed=1), config=config, checkpoint_dir=tmp_path)
    assert len(first.epochs) < config.epochs  # it stopped early
    resumed = fit(model(), blobs(), blobs(seed=1), config=config, checkpoint_dir=tmp_path, resume=True)
    assert len(resumed.epochs) == len(first.epochs) and resumed.best_epoch == first.best_epoch


def test_compile_runs_the_compiled_step_through_fit(monkeypatch):
    """TrainConfig(compile=True) wraps the training step in torch.compile; the loop must take the compiled
    module as it is (it once asked it for a truth value, which a compiled module refuses). The eager backend
    keeps the test fast and gives the same numbers as no compilation."""
    from dataclasses import replace

    compiled = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(module) or real_compile(module, backend="eager"))
    runs = []
    for compile_step in (False, True):
        torch.manual_seed(0)
        m = model()
        runs.append((fit(m, blobs(), blobs(seed=1), config=replace(FAST, compile=compile_step)), weights(m)))
    assert len(compiled) == 1
    (h_plain, w_plain), (h_compiled, w_compiled) = runs
    assert [e["val_acc"] for e in h_compiled.epochs] == [e["val_acc"] for e in h_plain.epochs]
    assert all(torch.allclose(w_plain[k], w_compiled[k], atol=1e-6) for k in w_plain)


def test_fit_puts_the_training_tensors_on_the_device_once_and_batches_index_them_there(monkeypatch):
    """On a GPU, fit copies the training tensors to the device before the first epoch, so that every batch is
    gathered there and none is copied from host memory. (fit once page-locked the host tensors instead, which
    did nothing: indexing a pinned tensor with an index tensor returns a new, unpinned tensor, and the
    per-batch copy stayed synchronous.) No GPU here: the 'meta' device, which holds shapes but no values,
    stands in for one, and train_epoch is replaced by a spy that records what it is given."""
    import mmkd_utils.env
    import mmkd_utils.train as train_module

    accelerator = torch.device("meta")
    monkeypatch.setattr(mmkd_utils.env, "pick_device", lambda prefer=None: accelerator)
    seen = []

    def spy(model, train, objective, optimizer, config, epoch, **kwargs):
        seen.append((train, list(batches(train, config.batch_size, shuffle=True, generator=torch.Generator()))))
        return {"train_total": 0.0}

    monkeypatch.setattr(train_module, "train_epoch", spy)
    data = blobs()
    fit(model(), data, config=TrainConfig(epochs=2, batch_size=64))
    assert len(seen) == 2
    first_train = seen[0][0]
    assert all(v.device == accelerator for v in first_train.values())  # copied once, before the first epoch
    assert all(train is first_train for train, _ in seen)  # and not again in later epochs
    for _, epoch_batches in seen:  # every batch gathered on the device, with the rows batches() chose
        assert [b["x"].shape[0] for b in epoch_batches] == [64, 64, 64, 48]
        assert all(v.device == accelerator for b in epoch_batches for v in b.values())
    assert all(v.device.type == "cpu" for v in data.values())  # the caller's data is left where it was


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((6, 0), torch.float16),
                                               ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_mixed_precision_is_bf16_only_where_the_gpu_computes_it(monkeypatch, capability, dtype):
    """bf16 on compute capability ≥ 8.0 (A100, L4, H100), fp16 with a GradScaler below (a Colab T4 is 7.5).
    torch.cuda.is_bf16_supported() says yes on a T4 too (it counts emulated bf16): mocked here as it answers
    there, so a choice that trusts it fails on (7, 5). No GPU needed: the device queries are mocked."""
    from mmkd_utils.train import amp_settings

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or capability >= (8, 0))
    cuda = torch.device("cuda")
    assert amp_settings(TrainConfig(), cuda) == (True, dtype)
    assert amp_settings(TrainConfig(amp=False), cuda)[0] is False  # amp off: no autocast, no scaler
    assert amp_settings(TrainConfig(), torch.device("cpu"))[0] is False  # CUDA only


def test_bf16_is_native_on_rocm_and_never_off_cuda(monkeypatch):
    from mmkd_utils.train import bf16_native

    monkeypatch.setattr(torch.version, "hip", "6.2")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # MI200s report gfx90a as 9.0
    assert bf16_native(torch.device("cuda"))
    assert not bf16_native(torch.device("cpu")) and not bf16_native(torch.device("mps"))


def test_history_times_each_epoch_apart(tmp_path):
    """History.epoch_seconds: one entry per epoch's training pass, so that a first epoch that compiles can be
    reported apart from the others (notebook 10); the checkpoint keeps them for a resumed run."""
    config = TrainConfig(epochs=3, lr=1e-2, batch_size=32)
    torch.manual_seed(0)
    hist = fit(model(), blobs(), blobs(seed=1), config=config, checkpoint_dir=tmp_path)
    assert len(hist.epoch_seconds) == len(hist.epochs) == 3
    assert all(s > 0 for s in hist.epoch_seconds) and sum(hist.epoch_seconds) <= hist.seconds
    resumed = fit(model(), blobs(), blobs(seed=1), config=config, checkpoint_dir=tmp_path, resume=True)  # nothing left
    assert resumed.epoch_seconds == hist.epoch_seconds
