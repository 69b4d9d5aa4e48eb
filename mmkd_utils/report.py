"""Reporting: results tables, their markdown, the compression verdict, the command that reruns a result.

Introduced in notebook 05 (reading a results table) and 07 (evaluation). Everything here reads the
rows that ``experiment.run`` wrote and never trains anything: ``summary_table`` (mean ± std over seeds
and the paired difference to labels only), ``markdown_table``, ``compression_summary`` (does the best
distilled student, chosen on validation, meet the course's 95 % / 10× / 5× target?), ``write_results``,
``command_for`` (the command that reruns a result) and ``bench_markdown``. Publishing them to the
README and ``results/README.md`` is ``publish.py``.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from . import evaluate as ev
from .checkpoint import atomic_write_json


def mean_std_cell(mean: float, std: float, n: int, scale: float = 100.0, signed: bool = False) -> str:
    """``mean ± std`` in %, or the value alone with ``(n = 1)`` for a single seed (a spread of one run is
    not zero, it is unknown)."""
    value = f"{scale * mean:+.1f}" if signed else f"{scale * mean:.1f}"
    return f"{value} ± {scale * std:.1f}" if n > 1 else f"{value} (n = 1)"


def summary_table(rows: list[dict], costs: dict[str, dict] | None = None) -> list[dict]:
    """Mean ± std over seeds per (model, method), the paired difference to that model's label-only runs,
    and the model's size and CPU latency from ``costs`` (see ``model_costs``)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"]), []).append(r)
    table = []
    for (model, method), runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        entry = {"model": model, "method": method, "n_seeds": len(runs)}
        for metric in ("val_accuracy", "accuracy", "macro_f1", "ece", "agreement", "ood_accuracy", "ood_agreement"):
            if metric in runs[0]:
                entry[f"{metric}_mean"], entry[f"{metric}_std"] = ev.summarize([r[metric] for r in runs])
        entry["params"] = runs[0]["params"]
        for key in ("latency_ms_b1", "latency_ms_b64", "throughput_b64"):
            if costs and key in costs.get(model, {}):
                entry[key] = costs[model][key]
        if "speech_accuracy" in runs[0]:  # --speech: per voice heard (and "held-out", "human")
            entry["speech_accuracy"] = {v: dict(zip(("mean", "std"), ev.summarize([r["speech_accuracy"][v] for r in runs])))
                                        for v in runs[0]["speech_accuracy"]}
        base = groups.get((model, "labels"))
        if method != "labels" and base is not None:
            base = sorted(base, key=lambda r: r["seed"])
            if [r["seed"] for r in base] == [r["seed"] for r in runs]:
                entry["vs_labels"] = ev.paired_difference([r["accuracy"] for r in runs], [r["accuracy"] for r in base])
                if "speech_accuracy" in runs[0]:
                    entry["vs_labels_speech"] = {v: ev.paired_difference([r["speech_accuracy"][v] for r in runs],
                                                                         [r["speech_accuracy"][v] for r in base])
                                                 for v in runs[0]["speech_accuracy"]}
                if "ood_accuracy" in runs[0]:
                    entry["vs_labels_ood"] = ev.paired_difference([r["ood_accuracy"] for r in runs],
                                                                  [r["ood_accuracy"] for r in base])
        table.append(entry)
    return table


def markdown_table(table: list[dict]) -> str:
    """The results table in markdown (accuracy and macro-F1 as mean ± std over seeds, in %)."""
    lines = ["| model | method | val acc (%) | test acc (%) | macro-F1 (%) | Δ test acc vs labels only (paired) "
             "| agreement w/ teacher (%) | params | CPU latency b=1 (ms) |",
             "|---|---|---|---|---|---|---|---:|---:|"]
    for e in table:
        n = e["n_seeds"]
        acc = mean_std_cell(e["accuracy_mean"], e["accuracy_std"], n)
        f1 = mean_std_cell(e["macro_f1_mean"], e["macro_f1_std"], n)
        delta = delta_cell(e["vs_labels"]) if "vs_labels" in e else "—"
        agree = f"{100 * e['agreement_mean']:.1f}" if "agreement_mean" in e else "—"
        val = f"{100 * e['val_accuracy_mean']:.1f}" if "val_accuracy_mean" in e else "—"
        latency = f"{e['latency_ms_b1']:.2f}" if "latency_ms_b1" in e else "—"
        lines.append(f"| {e['model']} | {e['method']} | {val} | {acc} | {f1} | {delta} | {agree} | {e['params']:,} | {latency} |")
    return "\n".join(lines)


def delta_cell(d: dict) -> str:
    """A paired Δ as "+1.2 ± 0.3 [+0.9, +1.5] win": mean ± std over seeds, the 95 % paired t-interval and the
    verdict of the course's rule (``evaluate.verdict``: the interval excludes 0); one seed: the value alone."""
    interval = ev.paired_interval(d)
    if interval is None:
        return mean_std_cell(d["mean"], d["std"], d["n"], signed=True)
    low, high = interval
    word = ev.verdict(d)
    return (mean_std_cell(d["mean"], d["std"], d["n"], signed=True) + f" [{100 * low:+.1f}, {100 * high:+.1f}]"
            + (f" {word}" if word != "no clear change" else ""))


def ood_markdown(table: list[dict]) -> str:
    """In-domain and out-of-distribution test accuracy side by side, each with its paired Δ to labels only."""
    lines = ["| model | method | test acc (%) | Δ test (paired) | out-of-distribution acc (%) | Δ out-of-distribution (paired) "
             "| agreement w/ teacher, out of distribution (%) |", "|---|---|---|---|---|---|---|"]
    for e in table:
        n = e["n_seeds"]
        agree = f"{100 * e['ood_agreement_mean']:.1f}" if "ood_agreement_mean" in e else "—"
        lines.append(f"| {e['model']} | {e['method']} | {mean_std_cell(e['accuracy_mean'], e['accuracy_std'], n)} "
                     f"| {delta_cell(e['vs_labels']) if 'vs_labels' in e else '—'} "
                     f"| {mean_std_cell(e['ood_accuracy_mean'], e['ood_accuracy_std'], n)} "
                     f"| {delta_cell(e['vs_labels_ood']) if 'vs_labels_ood' in e else '—'} | {agree} |")
    return "\n".join(lines)


def speech_markdown(table: list[dict]) -> str:
    """The models that hear, on the test split spoken by each voice: accuracy per voice (mean ± std) and, for a
    distilled student, its paired Δ to labels only with the interval and verdict on the held-out voices and
    the human words."""
    rows = [e for e in table if "speech_accuracy" in e]
    voices = list(dict.fromkeys(v for e in rows for v in e["speech_accuracy"]))  # "human": only models that hear alone
    lines = ["| model | method | " + " | ".join(f"{v} (%)" for v in voices) + " | Δ held-out voices | Δ human |",
             "|---|---|" + "---:|" * len(voices) + "---|---|"]
    for e in rows:
        n, d = e["n_seeds"], e.get("vs_labels_speech", {})
        cells = [mean_std_cell(e["speech_accuracy"][v]["mean"], e["speech_accuracy"][v]["std"], n)
                 if v in e["speech_accuracy"] else "—" for v in voices]
        deltas = [delta_cell(d[v]) if v in d else "—" for v in ("held-out", "human")]
        lines.append(f"| {e['model']} | {e['method']} | " + " | ".join(cells + deltas) + " |")
    return "\n".join(lines)


KEEP_TARGET, PARAMS_TARGET, LATENCY_TARGET = 0.95, 10.0, 5.0  # the course's compression target


def compression_summary(table: list[dict], teacher: str) -> list[dict]:
    """For each student, its distilled method with the best mean *validation* accuracy (never chosen on
    test), and how it compares with the teacher it learnt from: the share of the teacher's test accuracy
    it keeps, and how many times fewer parameters and lower CPU latency (batch 1) it has."""
    by_key = {(e["model"], e["method"]): e for e in table}
    t = by_key.get((f"teacher ({teacher})", "labels"))
    out = []
    for model in dict.fromkeys(e["model"] for e in table if e["model"].endswith("student")):
        distilled = [e for e in table if e["model"] == model and e["method"] != "labels" and "val_accuracy_mean" in e]
        if t is None or not distilled or "accuracy_mean" not in t:
            continue
        best = max(distilled, key=lambda e: e["val_accuracy_mean"])
        entry = {"model": model, "method": best["method"], "keeps": best["accuracy_mean"] / t["accuracy_mean"],
                 "fewer_params": t["params"] / best["params"]}
        if (model, "labels") in by_key:  # what the student keeps without a teacher: the credit KD can claim
            entry["keeps_labels_only"] = by_key[(model, "labels")]["accuracy_mean"] / t["accuracy_mean"]
        if "latency_ms_b1" in t and "latency_ms_b1" in best:
            entry["faster"] = t["latency_ms_b1"] / best["latency_ms_b1"]
        entry["meets_target"] = (entry["keeps"] >= KEEP_TARGET and entry["fewer_params"] >= PARAMS_TARGET
                                 and entry.get("faster", 0.0) >= LATENCY_TARGET)
        out.append(entry)
    return out


def compression_markdown(table: list[dict], teacher: str) -> str:
    """One line per student: does its best distilled method (chosen on validation) keep ≥ 95 % of the
    teacher's accuracy with ≥ 10× fewer parameters and ≥ 5× lower latency?"""
    lines = []
    for e in compression_summary(table, teacher):
        faster = f"{e['faster']:.0f}× lower latency" if "faster" in e else "latency not measured"
        verdict = "meets" if e["meets_target"] else "misses"
        alone = f" (labels only: {100 * e['keeps_labels_only']:.1f} %)" if "keeps_labels_only" in e else ""
        lines.append(f"- {e['model']}, {e['method']} (best distilled method on validation): keeps "
                     f"{100 * e['keeps']:.1f} %{alone} of the {teacher} teacher's test accuracy with {e['fewer_params']:.0f}× "
                     f"fewer parameters and {faster} — {verdict} the 95 % / 10× / 5× target.")
    return "\n".join(lines)


def write_results(result: dict, out: Path) -> None:
    """``results.json``, ``results.md`` (a header naming the data, then the table) and ``results.png``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(result, out / "results.json")
    write_markdown(result, out)
    cfg = result["config"]
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone

    from .plots import results_bars

    fig = Figure(figsize=(7, 0.35 * len(result["table"]) + 1.2))
    results_bars(result["table"], ax=fig.add_subplot(),
                 title=f"{cfg['name']}: test accuracy, mean ± std over {len(cfg['seeds'])} seed(s)")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=110)


def write_markdown(result: dict, out: Path) -> None:
    """``results.md`` from a result (what ``write_results`` wrote, or a stored ``results.json``): a header naming
    the data and the rule, the table, and the out-of-distribution table where there is one."""
    cfg = result["config"]
    one_seed = "; one seed: no spread" if len(cfg["seeds"]) == 1 else ""
    notes = "".join(f"Note: {n}\n" for n in result.get("notes", []))
    header = (f"# Results: `{cfg['name']}`\n\nData: {cfg.get('data', 'openmoji')}; label column: {cfg['label']}; "
              f"label fraction {cfg['label_fraction']}; label noise {cfg['label_noise']}; students distil from the "
              f"{cfg['distill_from']} teacher (T={cfg['T']}, α={cfg['alpha']}); seeds {cfg['seeds']}; "
              f"{result['seconds'] / 60:.1f} min on {result['device']} ({result['torch_threads']} threads).\n"
              "Mean ± std over seeds on the test split; Δ is the paired difference to the same student "
              f"trained on labels only (same seeds), with its 95 % paired t-interval over seeds in brackets and "
              f"the verdict (win / loss) where that interval excludes 0 (the course's rule, notebook 07){one_seed}.\n{notes}\n")
    ood = ""
    if any("ood_accuracy_mean" in e for e in result["table"]):
        ood = (f"\n## Out of distribution: the test emoji drawn by another designer (`{cfg['ood_test']}`)\n\n"
               f"{ood_markdown(result['table'])}\n")
    if any("speech_accuracy" in e for e in result["table"]):
        ood += (f"\n## Heard by every voice: the test split spoken by each voice (trained on {', '.join(cfg['speech'])}); "
                f"held-out: the mean of the voices no run trains on; human: the words of one real speaker\n\n"
                f"{speech_markdown(result['table'])}\n")
    (out / "results.md").write_text(header + markdown_table(result["table"]) + "\n" + ood, encoding="utf8")


def jsonable(obj):
    """``obj`` with tuples as lists, as JSON stores them (so configurations compare equal after a round trip)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def val_summary(values: list[float]) -> dict:
    """Mean and std of validation accuracies over seeds."""
    mean, std = ev.summarize(values)
    return {"val_accuracy_mean": mean, "val_accuracy_std": std, "n_seeds": len(values)}


def val_cell(entry: dict, best: dict) -> str:
    """A selection table's cell: validation accuracy over seeds, the best marked."""
    return (mean_std_cell(entry["val_accuracy_mean"], entry["val_accuracy_std"], entry["n_seeds"])
            + (" ← best" if entry is best else ""))


def write_selection(config, stem: str, result: dict, lines: list[str]) -> None:
    """A validation-only selection's files: ``<out_dir>/<name>/<stem>.json`` and its table ``<stem>.md``."""
    out = Path(config.out_dir) / config.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(result, out / f"{stem}.json")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf8")


# ------------------------------------------------------------------------------------ rerunning
def command_for(config: dict, jobs: int = 1) -> str:
    """The command line that reruns an experiment: its configuration's differences from ``cpu``."""
    from .config import get_config

    default = jsonable(asdict(get_config(config.get("base", "cpu"))))
    args = []
    for key, value in config.items():
        if key in ("teacher_train", "student_train"):  # the CLI sets their epochs and learning rate
            args += [f"--{key.split('_')[0]}_{k} {value[k]}" for k in ("epochs", "lr") if value[k] != default[key][k]]
            continue
        if value == default.get(key):
            continue
        shown = ",".join(map(str, value)) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else value
        args.append(f"--{key} {shown}")
    args += [f"--jobs {jobs}"] if jobs > 1 else []
    return " ".join(["python -m mmkd_utils run --config cpu", *args])


def bench_markdown(result: dict) -> str:
    """The benchmark's tables (``python -m mmkd_utils bench``): epoch costs, inference costs, nbval times."""
    e = result["epoch_seconds"]
    lines = [f"Benchmark on {result['torch_threads']} CPU thread(s), median of {result['repeats']} repeats.", "",
             "| one epoch of the image student | seconds | × labels only |", "|---|---:|---:|",
             f"| labels only | {e['labels_only']:.2f} | 1.00 |",
             f"| distillation, cached teacher logits | {e['kd_cached_teacher']:.2f} | {e['cached_over_labels']:.2f} |",
             f"| distillation, teacher run online | {e['kd_online_teacher']:.2f} | {e['online_over_labels']:.2f} |",
             "", "| model | params | size (MB) | latency b=1 (ms) | latency b=64 (ms) | throughput b=64 (/s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result["inference"]:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['size_mb']:.2f} | {r['latency_ms_b1']:.2f} | "
                     f"{r['latency_ms_b64']:.1f} | {r['throughput_b64']:.0f} |")
    if "nbval_seconds" in result:
        lines += ["", "| notebook | nbval seconds |", "|---|---:|"]
        lines += [f"| {Path(p).name} | {s:.1f} |" for p, s in result["nbval_seconds"].items()]
        lines.append(f"| **all** | **{sum(result['nbval_seconds'].values()):.1f}** |")
    return "\n".join(lines) + "\n"
