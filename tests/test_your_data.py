"""Any dataset, end to end: a folder the test builds itself (not OpenMoji), run through the command line,
with both modalities or images only, and bad input stopped with a clear message before anything is written."""
import csv
import json
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw

SHAPES = {"disc": "a round red disc", "square": "a green square box", "bar": "a long blue bar"}


def make_folder(folder, n_per_class=20, text=True, label="shape"):
    """Coloured shapes in the Hugging Face imagefolder layout: metadata.csv with file_name (and text)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for c, (shape, name) in enumerate(SHAPES.items()):
        for i in range(n_per_class):
            image = Image.new("RGB", (64, 64), "white")
            draw, off = ImageDraw.Draw(image), 4 + (i % 7) * 2
            box = [off, off, 40 + off % 9, 40 + off % 9] if shape != "bar" else [off, 28, 60 - off % 5, 36]
            (draw.ellipse if shape == "disc" else draw.rectangle)(box, fill=("red", "green", "blue")[c])
            image.save(folder / f"{shape}{i}.png")
            rows.append({"file_name": f"{shape}{i}.png", **({"text": f"{name} number {i}"} if text else {}),
                         label: shape, "score": f"{0.1 * i:.2f}"})
    with open(folder / "metadata.csv", "w", newline="", encoding="utf8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "mmkd_utils", "run", "--config", "tiny", "--quiet", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_a_folder_runs_the_whole_experiment_from_the_command_line(tmp_path):
    folder = make_folder(tmp_path / "shapes")
    out = tmp_path / "results"
    proc = cli("--data", folder, "--label", "shape", "--out_dir", out, "--name", "shapes", "--methods", "labels,soft")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "shapes" / "results.json").read_text())
    assert {r["model"] for r in result["rows"]} == {"teacher (fusion)", "teacher (text)", "teacher (image)",
                                                    "image student", "text student", "multimodal student"}
    header = (out / "shapes" / "results.md").read_text().splitlines()[2]
    assert f"Data: {folder}; label column: shape;" in header
    assert "± 0.0" not in (out / "shapes" / "results.md").read_text()  # one seed: no spread shown
    assert result["rows"][0]["accuracy"] > 0.5  # three clearly different shapes: the teacher is far above chance


def test_an_image_only_folder_runs_what_can_run_and_says_what_it_skipped(tmp_path):
    folder = make_folder(tmp_path / "shapes", text=False)
    out = tmp_path / "results"
    refused = cli("--data", folder, "--label", "shape", "--out_dir", out)
    assert refused.returncode != 0 and "--distill_from image" in refused.stderr and not out.exists()
    proc = cli("--data", folder, "--label", "shape", "--out_dir", out, "--name", "images", "--distill_from", "image",
               "--methods", "labels,soft", "--crossfit", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "images" / "results.json").read_text())
    assert {r["model"] for r in result["rows"]} == {"teacher (image)", "image student"}
    notes = " ".join(result["notes"])
    for skipped in ("fusion teacher", "text teacher", "text student", "multimodal student"):
        assert f"skipped the {skipped}: the dataset has no text column" in notes
    assert "folds are made row by row" in proc.stdout  # no 'base' column: cross-fitting falls back, and says so
    assert "Note: skipped the text student" in (out / "images" / "results.md").read_text()


@pytest.mark.parametrize("problem, message", [
    ("no metadata", "metadata.csv"),
    ("unknown label", "has no 'kind' column"),
    ("not categorical", "not categories"),
    ("one image", "at least 6 are needed"),
])
def test_bad_folders_stop_with_a_clear_message_and_write_nothing(tmp_path, problem, message):
    folder = make_folder(tmp_path / "shapes", n_per_class=1 if problem == "one image" else 8)
    label = {"unknown label": "kind", "not categorical": "score"}.get(problem, "shape")
    if problem == "no metadata":
        (folder / "metadata.csv").unlink()
    if problem == "one image":
        rows = (folder / "metadata.csv").read_text().splitlines()[:2]
        (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "results"
    proc = cli("--data", folder, "--label", label, "--out_dir", out, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")  # a message, not a traceback
    assert message in proc.stderr, proc.stderr[-1500:]
    assert not out.exists()


def test_an_unknown_label_column_of_openmoji_lists_its_label_columns(tmp_path):
    proc = cli("--label", "emoji", "--out_dir", tmp_path / "results", timeout=120)
    assert proc.returncode != 0 and "label columns are ['group', 'subgroup']" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_parallel_runs_from_a_script_without_a_main_guard_say_what_to_do(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text("from mmkd_utils.config import get_config\nfrom mmkd_utils.experiment import run\n"
                      f"run(get_config('tiny', seeds=(0, 1), out_dir={str(tmp_path / 'out')!r}, students=('text',), "
                      "methods=('labels',)), progress=False, jobs=2)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0
    assert 'if __name__ == "__main__":' in proc.stderr.strip().splitlines()[-1]
