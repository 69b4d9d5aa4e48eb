"""The benchmark runs end to end on the tiny configuration and reports what it measured."""
import json

from mmkd_utils.bench import run_bench


def test_bench_measures_cached_and_online_distillation(tmp_path):
    result = run_bench("tiny", tmp_path, repeats=1)
    e = result["epoch_seconds"]
    assert all(e[k] > 0 for k in ("labels_only", "kd_cached_teacher", "kd_online_teacher"))
    # the online teacher runs MobileNetV2 and MiniLM on every batch: it must cost more than a cached lookup
    assert e["kd_online_teacher"] > e["kd_cached_teacher"]
    models = [r["model"] for r in result["inference"]]
    assert models[0].startswith("teacher") and "image student" in models
    teacher, image_student = result["inference"][0], result["inference"][models.index("image student")]
    assert teacher["params"] > 100 * image_student["params"]
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["epoch_seconds"] == e
    assert "| distillation, cached teacher logits |" in (tmp_path / "bench.md").read_text()
