"""Publishing: the README's findings and ``results/README.md``'s full tables, from ``results/``.

``python -m mmkd_utils publish`` refreshes, from the files ``experiment.run`` wrote:

- every ``<!-- results:NAME:start -->`` … ``<!-- results:NAME:end -->`` block (in ``results/README.md``):
  the command that reruns ``results/NAME``, where and how long it ran, its table and compression verdict;
- the README's ``<!-- findings:start -->`` … ``<!-- findings:end -->`` block: one row per setting and
  student, the distilled method that did best on *validation*, its paired Δ against labels only, and a
  verdict by the course's one rule, ``evaluate.verdict`` (``win`` / ``loss``: the 95 % paired t-interval
  over seeds excludes 0; otherwise ``no clear change``);
- ``results/findings.png``, the same as a figure.

No number is typed by hand: ``tests/test_readme.py`` checks that every block equals what this writes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .evaluate import paired_interval, verdict
from .report import (bench_markdown, command_for, compression_markdown, markdown_table, mean_std_cell, ood_markdown,
                     speech_markdown, write_markdown)

BLOCK = re.compile(r"<!-- results:([\w.-]+):start -->")


def readme_block(results_dir: str | Path) -> str:
    """The block for one results folder, from results.json: how to rerun it, where and how long it ran,
    and its table."""
    if (Path(results_dir) / "bench.json").exists():  # a benchmark folder (python -m mmkd_utils bench)
        return bench_markdown(json.loads((Path(results_dir) / "bench.json").read_text(encoding="utf8"))).rstrip("\n")
    result = json.loads((Path(results_dir) / "results.json").read_text(encoding="utf8"))
    caption = (f"`{command_for(result['config'], result.get('jobs', 1))}` — {result['seconds'] / 60:.0f} min on "
               f"{result['device']} ({result['torch_threads']} threads, {result.get('jobs', 1)} seed(s) at a time; latency "
               f"on {result.get('latency_threads', '?')} thread), "
               f"torch {result['versions']['torch']}, seeds {', '.join(map(str, result['config']['seeds']))}; "
               f"students distil from the {result['config']['distill_from']} teacher at T = {result['config']['T']}, "
               f"α = {result['config']['alpha']}.")
    if "merged_from" in result:  # python -m mmkd_utils merge: runs of the same configuration, other seeds
        runs = "; ".join(f"`{m['run']}` (seeds {', '.join(map(str, m['seeds']))})" for m in result["merged_from"])
        merge = " ".join(f"results/{m['run']}" for m in result["merged_from"])
        caption += (f" Joined from {runs} by `python -m mmkd_utils merge {merge} --name {result['config']['name']}`: "
                    "each seed trains alone, so the rows are those of the one command.")
    summary = compression_markdown(result["table"], result["config"]["distill_from"])
    ood = ""
    if any("ood_accuracy_mean" in e for e in result["table"]):  # --ood_test: the same models on the redrawn test emoji
        ood = (f"\n\nThe same models on the test emoji drawn by another designer (`--ood_test "
               f"{result['config']['ood_test']}`, evaluation only):\n\n{ood_markdown(result['table'])}")
    if any("speech_accuracy" in e for e in result["table"]):  # --speech: the models that hear, voice by voice
        ood += (f"\n\nThe models that hear, on the test split spoken by each voice (trained on "
                f"{', '.join(result['config']['speech'])}; held-out: the mean of the three voices no run trains on; "
                f"human: 41 words of one real speaker):\n\n{speech_markdown(result['table'])}")
    return caption + "\n\n" + markdown_table(result["table"]) + ood + (f"\n\n{summary}" if summary else "")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def settings(results_md: str | Path) -> list[tuple[str, str]]:
    """(heading, results folder name) for every results block of ``results_md``, in order: the heading is
    the nearest ``###`` above the block."""
    out, heading = [], ""
    for line in Path(results_md).read_text(encoding="utf8").splitlines():
        if line.startswith("### "):
            heading = line[4:].strip()
        match = BLOCK.match(line)
        if match and match.group(1) != "bench":
            out.append((heading, match.group(1)))
    return out


def findings(results_md: str | Path = "results/README.md", results_root: str | Path = "results") -> list[dict]:
    """For every setting and student: the distilled method with the best mean validation accuracy (never
    chosen on test), its paired Δ test accuracy against labels only, the verdict, and soft KD's Δ beside it."""
    rows = []
    for heading, name in settings(results_md):
        table = json.loads((Path(results_root) / name / "results.json").read_text(encoding="utf8"))["table"]
        for student in dict.fromkeys(e["model"] for e in table if e["model"].endswith("student")):
            distilled = [e for e in table if e["model"] == student and "vs_labels" in e]
            if not distilled:
                continue
            best = max(distilled, key=lambda e: e["val_accuracy_mean"])
            soft = next((e for e in distilled if e["method"] == "soft"), None)
            rows.append({"setting": heading, "anchor": github_anchor(heading), "name": name, "student": student,
                         "method": best["method"], "delta": best["vs_labels"], "verdict": verdict(best["vs_labels"]),
                         "soft_delta": soft["vs_labels"] if soft else None})
            if "vs_labels_ood" in best:  # the same students on the out-of-distribution test set
                rows.append({**rows[-1], "name": f"{name}, out of distribution", "delta": best["vs_labels_ood"],
                             "verdict": verdict(best["vs_labels_ood"]), "soft_delta": soft["vs_labels_ood"] if soft else None})
            if "held-out" in best.get("vs_labels_speech", {}):  # the same students on the voices no run trains on
                rows.append({**rows[-1], "name": f"{name}, held-out voices", "delta": best["vs_labels_speech"]["held-out"],
                             "verdict": verdict(best["vs_labels_speech"]["held-out"]),
                             "soft_delta": soft["vs_labels_speech"]["held-out"] if soft else None})
    return rows


def interval_cell(d: dict) -> str:
    """A paired Δ's 95 % t-interval over seeds in percentage points, "[+0.9, +1.5]" ("—" for one seed)."""
    interval = paired_interval(d)
    return "—" if interval is None else f"[{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}]"


def false_positive_note(rows: list[dict], level: float = 0.95) -> str:
    """How many verdicts the findings draw on one test split, and how many wins or losses chance alone would
    give if distillation changed nothing anywhere (each interval misses 0 with probability 1 − level)."""
    expected = (1 - level) * len(rows)
    return (f"{len(rows)} verdicts on one test split, each at {100 * level:.0f} %: were there no effect anywhere, "
            f"about {expected:.1f} would still read win or loss by chance; a lone verdict is a lead until new seeds "
            "repeat it.")


def findings_markdown(rows: list[dict], link: str = "results/README.md") -> str:
    """The README's findings table: each setting links to its full table (a reference link per section, defined
    once under the table, keeps the front page short); the verdict is ``evaluate.verdict``."""
    labels = {a: f"s{i}" for i, a in enumerate(dict.fromkeys(r["anchor"] for r in rows), start=1)}
    lines = ["| setting (full table) | student | best distilled on validation | Δ test acc vs labels (pp) | "
             "95 % t-interval | verdict | soft KD Δ |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        d, s = r["delta"], r["soft_delta"]
        soft = mean_std_cell(s["mean"], s["std"], s["n"], signed=True) if s else "—"
        lines.append(f"| [{r['name']}][{labels[r['anchor']]}] | {r['student'].replace(' student', '')} | {r['method']} | "
                     f"{mean_std_cell(d['mean'], d['std'], d['n'], signed=True)} | {interval_cell(d)} | {r['verdict']} "
                     f"| {soft} |")
    targets = "\n".join(f"[{label}]: {link}#{anchor}" for anchor, label in labels.items())
    return "\n".join(lines) + "\n\n" + false_positive_note(rows) + "\n\n" + targets


def findings_figure(rows: list[dict], path: str | Path) -> None:
    """The findings as a figure: paired Δ with its 95 % t-interval per setting and student, coloured by the
    verdict (soft KD's mean as ×)."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone

    colours = {"win": "tab:green", "loss": "tab:red", "no clear change": "tab:gray"}
    fig = Figure(figsize=(9, 0.3 * len(rows) + 1.8))
    ax = fig.add_subplot()
    for y, r in enumerate(rows):
        d = r["delta"]
        low, high = paired_interval(d) or (d["mean"], d["mean"])
        ax.errorbar(100 * d["mean"], y, xerr=[[100 * (d["mean"] - low)], [100 * (high - d["mean"])]], fmt="o",
                    color=colours[r["verdict"]], capsize=3)
        if r["soft_delta"] is not None and r["method"] != "soft":
            ax.plot(100 * r["soft_delta"]["mean"], y, "x", color="black", alpha=0.6, label="soft KD" if y == 0 else None)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{r['name']} · {r['student'].replace(' student', '')} ({r['method']})" for r in rows],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("Δ test accuracy vs the same student on labels only (pp):\nmean over seeds and its 95 % paired t-interval")
    ax.set_title("Where distillation helps: the distilled method best on validation\n"  # lines short enough to fit
                 "green: win, red: loss (the interval excludes 0), grey: no clear change\n"  # above the axes, whose
                 "×: soft KD where it is not the best", fontsize=9)  # left part holds the long setting names
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})


def reproductions_markdown(results_root: str | Path = "results") -> str:
    """One line per rerun recorded by ``python -m mmkd_utils reproduce`` (``results/*/reproduction.json``)."""
    lines = []
    for path in sorted(Path(results_root).glob("*/reproduction.json")):
        for rerun in json.loads(path.read_text(encoding="utf8")):
            worst = ", ".join(f"{model}: {m['exact']}/{m['rows']} exact, largest change {100 * m['max_seed_change']:.1f} "
                              f"pp per seed and {100 * m['max_mean_change']:.1f} pp per mean"
                              for model, m in rerun["models"].items() if m["exact"] < m["rows"])
            threads = max(1, rerun["torch_threads"] // rerun["jobs"])
            what = (f"its rows that `{rerun['shared_with']}` reran (same seeds and settings, run later)"
                    if "shared_with" in rerun else "rerun")
            lines.append(f"- `{path.parent.name}`, {what} with `--jobs {rerun['jobs']}` ({threads} CPU thread(s) per seed, torch "
                         f"{rerun['versions']['torch']}): {rerun['exact']} of {rerun['rows']} test accuracies bit-identical"
                         + (f"; {worst}." if worst else "."))
    return "\n".join(lines) or "- none recorded yet"


# (student, the run it learnt from the fusion teacher in, the run it learnt from its own modality's teacher in)
TEACHER_PAIRS = (("image student", "adaptive", "which-teacher-image"), ("text student", "main", "compress-text"))


def teacher_comparison(results_root: str | Path = "results", pairs=TEACHER_PAIRS) -> list[dict]:
    """Which teacher should teach a one-modality student: per student and method, the paired difference
    (own-modality teacher − fusion teacher) in test accuracy over the seeds both runs share. The pairing is
    sound only if the two runs' label-only rows are bit-identical (same data, seeds and kernels): recorded."""
    from .evaluate import paired_difference

    out = []
    for student, fusion_run, own_run in pairs:
        runs = {}
        for name in (fusion_run, own_run):
            result = json.loads((Path(results_root) / name / "results.json").read_text(encoding="utf8"))
            runs[name] = {(r["method"], r["seed"]): r["accuracy"] for r in result["rows"] if r["model"] == student}
        fusion, own = runs[fusion_run], runs[own_run]
        seeds = sorted({s for m, s in fusion if (m, s) in own})
        same_baseline = all(fusion[("labels", s)] == own[("labels", s)] for s in seeds)
        for method in sorted({m for m, _ in fusion if m != "labels" and all((m, s) in own for s in seeds)}):
            d = paired_difference([own[(method, s)] for s in seeds], [fusion[(method, s)] for s in seeds])
            out.append({"student": student, "method": method, "fusion_run": fusion_run, "own_run": own_run,
                        "delta": d, "verdict": verdict(d), "same_baseline": same_baseline})
    return out


def teacher_comparison_markdown(rows: list[dict]) -> str:
    """The teacher comparison as a table (results/README.md), judged by ``evaluate.verdict``."""
    lines = ["| student | method | runs (fusion teacher / own-modality teacher) | Δ test acc, own − fusion (pp) | "
             "95 % t-interval (pp) | verdict | label-only rows identical |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["delta"]
        lines.append(f"| {r['student']} | {r['method']} | `{r['fusion_run']}` / `{r['own_run']}` | "
                     f"{mean_std_cell(d['mean'], d['std'], d['n'], signed=True)} | {interval_cell(d)} | {r['verdict']} | "
                     f"{'yes' if r['same_baseline'] else 'no: not paired'} |")
    return "\n".join(lines)


# (what is compared, (run, method) of the first arm, (run, method) of the second): robustness to unheard voices
SPEECH_PAIRS = (("distilled on one voice − labels on four voices", ("speech-one-voice", "soft"), ("speech-four-voices", "labels")),
                ("labels: four voices − one voice", ("speech-four-voices", "labels"), ("speech-one-voice", "labels")),
                ("distilled: four voices − one voice", ("speech-four-voices", "soft"), ("speech-one-voice", "soft")))


def speech_comparison(results_root: str | Path = "results", pairs=SPEECH_PAIRS) -> list[dict]:
    """Across the speech runs (same seeds, separate runs): the audio student's paired Δ on the held-out voices
    and on the human words, for each pair of (run, method) in ``pairs``. Two runs of one seed share nothing but
    the seed, so these pairs are only as tight as independent runs."""
    from .evaluate import paired_difference

    out = []
    for what, *arms in pairs:
        acc = []
        for run, method in arms:
            rows = json.loads((Path(results_root) / run / "results.json").read_text(encoding="utf8"))["rows"]
            acc.append({r["seed"]: r["speech_accuracy"] for r in rows if r["model"] == "audio student" and r["method"] == method})
        seeds = sorted(set(acc[0]) & set(acc[1]))
        for voices in ("held-out", "human"):
            d = paired_difference([acc[0][s][voices] for s in seeds], [acc[1][s][voices] for s in seeds])
            out.append({"what": what, "arms": arms, "voices": voices, "delta": d, "verdict": verdict(d)})
    return out


def speech_majority() -> dict:
    """The floor every model that hears must beat: the training split's commonest group, and its share of the
    test split (563 rows) and of the human words (41)."""
    import numpy as np

    from .data import load_openmoji
    from .speech import human_metadata

    openmoji = load_openmoji()
    names = openmoji["train"].features["group"].names
    commonest = int(np.bincount(openmoji["train"]["group"]).argmax())
    test = np.array(openmoji["test"]["group"]) == commonest
    human = [r["group"] == names[commonest] for r in human_metadata()]
    return {"group": names[commonest], "test": (int(test.sum()), len(test)), "human": (sum(human), len(human))}


def speech_comparison_markdown(rows: list[dict], majority: dict | None = None) -> str:
    """The cross-run table, then (given ``speech_majority()``) the majority class's share of each test set."""
    lines = ["| audio student | runs · methods | tested on | Δ acc (pp) | 95 % t-interval (pp) | verdict |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        d = r["delta"]
        arms = " − ".join(f"`{run}` · {method}" for run, method in r["arms"])
        lines.append(f"| {r['what']} | {arms} | {r['voices']} | {mean_std_cell(d['mean'], d['std'], d['n'], signed=True)} "
                     f"| {interval_cell(d)} | {r['verdict']} |")
    if majority is not None:
        (k, n), (kh, nh) = majority["test"], majority["human"]
        lines += ["", f"The floor: predicting the training split's commonest group, {majority['group']}, for every clip "
                      f"scores {100 * k / n:.1f} % on the test split ({k} of {n} rows) and {100 * kh / nh:.1f} % on the "
                      f"human words ({kh} of {nh})."]
    return "\n".join(lines)


def replace_block(text: str, tag: str, content: str) -> str:
    """``text`` with its ``<!-- TAG:start -->`` … ``<!-- TAG:end -->`` block holding ``content`` (unchanged if absent)."""
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    if start not in text:
        return text
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{content}\n{end}{rest.split(end, 1)[1]}"


def refresh_blocks(path: str | Path, results_root: str | Path = "results") -> list[str]:
    """Refresh every results block of the markdown file ``path``; returns the names refreshed."""
    path = Path(path)
    text = path.read_text(encoding="utf8")
    names = BLOCK.findall(text)
    for name in names:
        if f"<!-- results:{name}:end -->" not in text:
            raise ValueError(f"{path}: <!-- results:{name}:start --> has no matching <!-- results:{name}:end -->")
        text = replace_block(text, f"results:{name}", readme_block(Path(results_root) / name))
    path.write_text(text, encoding="utf8")
    return names


def publish(readme: str | Path = "README.md", results_root: str | Path = "results") -> list[str]:
    """Refresh ``results/README.md``'s tables, the README's findings block and ``results/findings.png``;
    returns the names of the results blocks refreshed."""
    results_md = Path(results_root) / "README.md"
    for stored in sorted(Path(results_root).glob("*/results.json")):  # each table in the current format and rule
        result = json.loads(stored.read_text(encoding="utf8"))
        if "config" in result:  # written by experiment.run (classic/ has its own format)
            write_markdown(result, stored.parent)
    names = refresh_blocks(results_md, results_root) + refresh_blocks(readme, results_root)
    text = replace_block(results_md.read_text(encoding="utf8"), "reproductions", reproductions_markdown(results_root))
    if "<!-- teachers:start -->" in text:
        text = replace_block(text, "teachers", teacher_comparison_markdown(teacher_comparison(results_root)))
    if "<!-- speech-voices:start -->" in text:
        text = replace_block(text, "speech-voices", speech_comparison_markdown(speech_comparison(results_root),
                                                                                 speech_majority()))
    results_md.write_text(text, encoding="utf8")
    rows = findings(results_md, results_root)
    text = replace_block(Path(readme).read_text(encoding="utf8"), "findings", findings_markdown(rows))
    Path(readme).write_text(text, encoding="utf8")
    findings_figure(rows, Path(results_root) / "findings.png")
    return names
