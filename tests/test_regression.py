"""Regression guard: the tiny configuration reproduces, number for number, what it gave before the
package was reorganised (issue 11). The fixture was written by the pre-refactor code; rerunning the
same command line must give the same accuracies, macro-F1, Δ and agreement on this machine's CPU."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "regression_tiny.json").read_text(encoding="utf8"))


@pytest.mark.parametrize("name", sorted(FIXTURE["runs"]))
def test_tiny_runs_reproduce_the_recorded_numbers(name, tmp_path):
    recorded = FIXTURE["runs"][name]
    proc = subprocess.run([sys.executable, "-m", "mmkd_utils", "run", *recorded["args"], "--out_dir", str(tmp_path),
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / name / "results.json").read_text(encoding="utf8"))
    rows = {(r["model"], r["method"], r["seed"]): r for r in result["rows"]}
    assert set(rows) == {(r["model"], r["method"], r["seed"]) for r in recorded["rows"]}
    for want in recorded["rows"]:
        got = rows[(want["model"], want["method"], want["seed"])]
        for key, value in want.items():
            assert got[key] == value, f"{name}: {want['model']} · {want['method']}: {key} {got[key]} != {value}"
    deltas = {f"{e['model']} · {e['method']}": e["vs_labels"]["mean"] for e in result["table"] if "vs_labels" in e}
    assert deltas == recorded["deltas"]
