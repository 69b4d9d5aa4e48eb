"""mmkd_utils.export: ONNX parity, predict's refusals, the safetensors bundle's round trip, the model card."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mmkd_utils import export
from mmkd_utils.models import HashingTokenizer, ImageCNN, MultimodalStudent, TextBag

pytest.importorskip("onnxruntime")
CONFIG = SimpleNamespace(cnn_width=4, text_buckets=64, text_dim=8, student_image_size=8)
CLASSES = ["animals", "food", "flags"]


@pytest.fixture
def student():
    torch.manual_seed(0)
    return MultimodalStudent(len(CLASSES), width=4, n_buckets=64, dim=8).eval()


@pytest.fixture
def spec(student):
    return export.deployment_spec(student, CONFIG, CLASSES)


@pytest.fixture
def picture():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), "RGB")


def batch(n=5, tokens=6):
    text_ids = torch.randint(1, 64, (n, tokens), generator=torch.Generator().manual_seed(1))
    text_ids[0, 3:] = 0  # a shorter name, padded
    return {"image": torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(2)), "text_ids": text_ids}


def test_onnx_matches_pytorch_at_another_batch_size_and_length(student, tmp_path):
    path = export.export_onnx(student, batch(2, 4), tmp_path / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no external data file
    data = batch(7, 9)  # neither the batch size nor the length of the example
    onnx_logits = export.onnx_logits(export.onnx_session(path), data, batch_size=3)
    with torch.no_grad():
        torch_logits = student(data)
    assert onnx_logits.shape == (7, 3)
    assert (onnx_logits - torch_logits).abs().max().item() <= 1e-5


def test_int8_model_is_smaller_and_close(student, tmp_path):
    big = TextBag(3, n_buckets=4096, dim=32).eval()  # the embedding dominates, as in the course's students
    data = {"text_ids": batch(9)["text_ids"]}
    path = export.export_onnx(big, data, tmp_path / "f.onnx")
    quantized = export.quantize_int8(path, tmp_path / "q.onnx")
    assert quantized.stat().st_size < 0.4 * path.stat().st_size  # int8 weights: about a quarter
    with torch.no_grad():
        reference = big(data)
    int8 = export.onnx_logits(export.onnx_session(quantized), data)
    assert 0 < (int8 - reference).abs().max().item() < 0.1  # rounded, not broken


def test_predict_gives_sorted_probabilities_and_matches_the_model(student, spec, picture):
    top = export.predict(student, spec, picture, "red apple", top_k=3)
    assert [c for c, _ in top] and sorted(c for c, _ in top) == sorted(CLASSES)
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-6
    x = (torch.from_numpy(np.asarray(picture.resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float32) / 255)
         .permute(2, 0, 1) - torch.tensor(spec["image"]["mean"])[:, None, None]) / torch.tensor(spec["image"]["std"])[:, None, None]
    with torch.no_grad():
        expected = student({"image": x[None], "text_ids": HashingTokenizer(64)(["red apple"])}).softmax(1)[0]
    assert probs[0] == pytest.approx(expected.max().item(), abs=1e-6)


def test_predict_reads_a_path_like_the_picture(student, spec, picture, tmp_path):
    picture.save(tmp_path / "p.png")
    assert export.predict(student, spec, tmp_path / "p.png", "x") == export.predict(student, spec, picture, "x")


def test_predict_refuses_a_file_that_is_not_an_image(student, spec, tmp_path):
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(ValueError, match="not an image PIL can read; pass a PNG or JPEG"):
        export.predict(student, spec, tmp_path / "notes.txt", "cat")
    with pytest.raises(FileNotFoundError, match="no image file"):
        export.predict(student, spec, tmp_path / "missing.png", "cat")
    with pytest.raises(TypeError, match="PIL.Image.fromarray"):
        export.predict(student, spec, np.zeros((8, 8, 3)), "cat")


@pytest.mark.parametrize("name", ["", "   ", 3])
def test_predict_refuses_an_empty_name(student, spec, picture, name):
    with pytest.raises(ValueError, match="non-empty string"):
        export.predict(student, spec, picture, name)


def test_predict_refuses_a_wrong_image_mode(student, spec):
    with pytest.raises(ValueError, match=r"mode 'F'.*image.convert\('RGB'\)"):
        export.predict(student, spec, Image.new("F", (8, 8)), "cat")
    grey = export.predict(student, spec, Image.new("L", (8, 8), 128), "cat")  # a mode it was trained on
    assert grey == export.predict(student, spec, Image.new("RGB", (8, 8), (128, 128, 128)), "cat")


def test_predict_refuses_a_label_set_that_does_not_match(student, spec, picture):
    with pytest.raises(ValueError, match="3 outputs but the label set has 2 classes"):
        export.predict(student, {**spec, "class_names": CLASSES[:2]}, picture, "cat")
    with pytest.raises(ValueError, match="3 outputs but the label set has 4"):
        export.save_student(student, "unused", {**spec, "class_names": CLASSES + ["x"]})


def test_predict_needs_every_input_unless_told(student, spec, picture):
    with pytest.raises(ValueError, match="needs a name; pass it, or missing_ok=True"):
        export.predict(student, spec, picture)
    with pytest.raises(ValueError, match="give an image"):
        export.predict(student, spec)
    with pytest.raises(ValueError, match="top_k must be between 1 and 3"):
        export.predict(student, spec, picture, "cat", top_k=4)
    with torch.no_grad():
        expected = student({"text_ids": HashingTokenizer(64)(["cat"])}, drop={"image"}).softmax(1).max().item()
    assert export.predict(student, spec, name="cat", missing_ok=True)[0][1] == pytest.approx(expected, abs=1e-6)


def test_spec_holds_what_the_student_needs(spec):
    assert spec["class_names"] == CLASSES and spec["image"]["size"] == 8
    assert spec["tokenizer"] == {"type": "HashingTokenizer", "n_buckets": 64, "char_ngrams": 3, "max_tokens": 64}
    assert spec["source_commit"] == "unknown" or len(spec["source_commit"]) == 40
    json.dumps(spec)  # JSON-ready


def test_round_trip_in_a_fresh_process_predicts_identically(student, spec, picture, tmp_path):
    export.save_student(student, tmp_path / "bundle", spec)
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["checkpoint.json", "model.safetensors"]
    picture.save(tmp_path / "p.png")
    script = ("import json, sys; from mmkd_utils import export; m, s = export.load_student(sys.argv[1]); "
              "print(json.dumps(export.predict(m, s, sys.argv[2], 'red apple')))")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "bundle"), str(tmp_path / "p.png")],
                         capture_output=True, text=True, check=True).stdout
    assert [tuple(r) for r in json.loads(out)] == export.predict(student, spec, picture, "red apple")


def test_load_refuses_a_tampered_bundle(student, spec, tmp_path):
    folder = export.save_student(student, tmp_path / "bundle", spec)
    meta = json.loads((folder / "checkpoint.json").read_text())
    meta["config"]["build"]["text_dim"] = 16
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not fit this model"):
        export.load_student(folder)


def test_model_card_describes_the_shipped_file_with_its_own_accuracy(spec):
    published = {"config": {"T": 4.0, "alpha": 0.5, "distill_from": "fusion"}, "table": [
        {"model": "multimodal student", "method": "soft", "n_seeds": 5, "accuracy_mean": 0.8586,
         "accuracy_std": 0.01, "macro_f1_mean": 0.6724, "macro_f1_std": 0.02}]}
    live = {"ships": "float32", "file": "student.onnx", "split_sizes": {"train": 10}, "shrunk": "3 epochs",
            "accuracy": {"validation": 0.81, "test": 0.84}, "macro_f1": 0.55,
            "per_group": {"animals": (0.9, 50), "food": (0.5, 4), "flags": (0.7, 20)},
            "without": {"image": 0.61}, "machine": "one thread of a test CPU",
            "formats": {"float32": {"validation_accuracy": 0.81, "size_mb": 4.31, "cpu_ms_b1": 0.2},
                        "int8": {"validation_accuracy": 0.80, "size_mb": 1.15, "cpu_ms_b1": 0.3}}}
    card = export.model_card(spec, published, live, "multimodal student", "soft")
    assert card.startswith("# Model card: multimodal student (soft distillation), `student.onnx` (float32)")
    accuracy = card.split("## Accuracy of this file")[1].split("##")[0]
    assert "test accuracy 0.840, test macro-F1 0.550, validation accuracy 0.810" in accuracy
    assert "0.859" not in accuracy  # the published model is another model: apart, and said so
    assert "## The same recipe trained in full (not this file)" in card and "accuracy 0.859 ± 0.010" in card
    assert "| food | 4 | 0.500 |" in card and "Weakest groups: food: 0.500" in card
    assert "Without its picture: accuracy 0.610" in card
    assert "| float32 | 0.810 | 4.31 | 0.200 | yes |" in card and "| int8 | 0.800 | 1.15 | 0.300 |  |" in card
    assert "one thread of a test CPU; not a phone" in card
    with pytest.raises(ValueError, match="no row for 'text student'"):
        export.model_card(spec, published, live, "text student", "soft")
    with pytest.raises(ValueError, match="shipped format 'int4' is not among"):
        export.model_card(spec, published, {**live, "ships": "int4"}, "multimodal student", "soft")


def test_static_int8_quantises_the_convolutions_with_fixed_scales(tmp_path):
    import onnx

    torch.manual_seed(0)
    cnn = ImageCNN(3, width=4).eval()
    data = {"image": torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(3))}
    path = export.export_onnx(cnn, data, tmp_path / "f.onnx")
    static = export.quantize_int8_static(path, tmp_path / "s.onnx", calibration=data, rows=32, batch_size=8, rest=())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.onnx", "s.onnx"]  # no intermediate file left
    ops = [n.op_type for n in onnx.load(str(static)).graph.node]
    assert ops.count("Conv") == 3 and "QuantizeLinear" in ops and "DynamicQuantizeLinear" not in ops  # QDQ, static
    session = export.onnx_session(static)
    one_row, batched = export.onnx_logits(session, data, batch_size=1), export.onnx_logits(session, data)
    torch.testing.assert_close(one_row, batched, atol=1e-5, rtol=0)  # fixed scales: a row scores alike in any batch
    with torch.no_grad():
        assert (batched - cnn(data)).abs().max().item() < 0.1  # rounded, not broken
    dynamic = export.onnx_session(export.quantize_int8(path, tmp_path / "d.onnx"))  # scales from each call's rows
    assert (export.onnx_logits(dynamic, data, batch_size=1) - export.onnx_logits(dynamic, data)).abs().max().item() > 1e-6


def test_static_int8_then_dynamic_for_the_rest(student, tmp_path):
    import onnx

    data = batch(12)
    path = export.export_onnx(student, data, tmp_path / "m.onnx")
    mixed = export.quantize_int8_static(path, tmp_path / "q.onnx", calibration=data, rows=12, batch_size=4)
    ops = [n.op_type for n in onnx.load(str(mixed)).graph.node]
    assert "QuantizeLinear" in ops and "DynamicQuantizeLinear" in ops and "ConvInteger" not in ops
    with torch.no_grad():
        assert (export.onnx_logits(export.onnx_session(mixed), data) - student(data)).abs().max().item() < 0.1


def test_call_times_times_sessions_and_modules_alike(student, tmp_path):
    data = batch(4)
    session = export.onnx_session(export.export_onnx(student, data, tmp_path / "m.onnx"))
    threads = torch.get_num_threads()
    times = export.call_times({"torch": student, "onnx": session}, data, batch_sizes=(1, 4), repeats=3, warmup=1)
    assert set(times) == {"torch", "onnx"} and torch.get_num_threads() == threads
    for row in times.values():
        assert set(row) == {"latency_ms_b1", "cpu_ms_b1", "latency_ms_b4", "cpu_ms_b4"}
        assert all(v > 0 for v in row.values())
    assert export.cpu_name()


def test_torch_floor_is_what_the_exporter_needs():
    """requirements.txt's lower bound for torch is export.MIN_TORCH, and export_onnx refuses an older torch."""
    import re

    from conftest import REPO_ROOT

    floor = re.search(r"^torch>=([0-9.]+)", (REPO_ROOT / "requirements.txt").read_text(encoding="utf8"), flags=re.M)
    assert floor and tuple(int(x) for x in floor.group(1).split(".")[:2]) == export.MIN_TORCH
    with pytest.raises(RuntimeError, match=r"needs torch>=2\.6.*this is torch 2\.4\.1"):
        export._check_torch("2.4.1+cpu")
    export._check_torch("2.6.0")
    export._check_torch("2.14.1")
