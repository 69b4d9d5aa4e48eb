"""Cached multi-view teacher outputs: the views, their cache, and how the experiment uses them."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mmkd_utils.views import ViewAugment, augmented_views, encode_views


class TinyEncoder(nn.Module):
    """A stand-in image encoder: deterministic, fast, and sensitive to where the pixels are."""

    name = "tiny-test-encoder"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 5, stride=4)

    def forward(self, x):
        return self.conv(x).flatten(1)


@pytest.fixture(scope="module")
def small(openmoji):
    return openmoji["train"].select(range(5))


def test_views_repeat_keep_the_original_first_and_differ_from_it(small):
    import numpy as np

    a, b = augmented_views(small, 4, seed=3), augmented_views(small, 4, seed=3)
    assert len(a) == 5 and all(len(row) == 4 for row in a)
    for row_a, row_b, original in zip(a, b, small["image"]):
        assert np.array_equal(np.asarray(row_a[0]), np.asarray(original))  # view 0 is untouched
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(row_a, row_b))  # seeded
        assert all(not np.array_equal(np.asarray(v), np.asarray(original)) for v in row_a[1:])  # augmented
        assert all(v.size == original.size and v.mode == "RGB" for v in row_a)
    other = augmented_views(small, 4, seed=4)
    assert not np.array_equal(np.asarray(other[0][1]), np.asarray(a[0][1]))


def test_identity_augment_reproduces_the_image(small):
    import numpy as np

    still = ViewAugment(max_shift=0.0, scale=(1.0, 1.0), rotate=0.0, flip=0.0)
    views = augmented_views(small, 2, augment=still)
    diff = np.abs(np.asarray(views[0][1], dtype=int) - np.asarray(views[0][0], dtype=int))
    assert diff.max() <= 1  # the identity affine, up to rounding


@pytest.mark.parametrize("kwargs, message", [
    ({"max_shift": 0.6}, "max_shift"), ({"scale": (1.2, 0.9)}, "scale"), ({"flip": 2.0}, "flip")])
def test_view_augment_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ViewAugment(**kwargs)


def test_encode_views_view0_matches_the_plain_pipeline_and_is_cached(small, tmp_path, monkeypatch):
    from mmkd_utils.data import images_tensor
    from mmkd_utils.encoders import encode_split

    monkeypatch.setenv("MMKD_CACHE_DIR", str(tmp_path))
    encoder = TinyEncoder()
    out = encode_views(small, encoder, 3, teacher_size=48, student_size=16)
    assert out["image_feat"].shape[:2] == (5, 3) and out["image"].shape == (5, 3, 3, 16, 16)
    plain = encode_split(small, encoder, "image", image_size=48, cache=False)
    assert torch.allclose(out["image_feat"][:, 0], plain, atol=1e-5)
    assert torch.equal(out["image"][:, 0], images_tensor(small, 16))
    assert not torch.allclose(out["image_feat"][:, 1], plain)  # the other views are other images
    assert len(list(tmp_path.glob("views-*.safetensors"))) == 1
    again = encode_views(small, encoder, 3, teacher_size=48, student_size=16)
    assert torch.equal(again["image_feat"], out["image_feat"]) and torch.equal(again["image"], out["image"])
    encode_views(small, encoder, 3, teacher_size=48, student_size=16, seed=1)  # other views, another file
    assert len(list(tmp_path.glob("views-*.safetensors"))) == 2


def test_config_rejects_a_single_view():
    from mmkd_utils.config import get_config

    with pytest.raises(ValueError, match="teacher_views"):
        get_config("tiny", teacher_views=1)


def test_students_train_on_the_views_the_teacher_labelled():
    """Under cached views every image-student method sees the views; view 0 of the teacher's outputs is
    what the teacher says about the clean training images."""
    from mmkd_utils.config import get_config
    from mmkd_utils.experiment import run_seed
    from mmkd_utils.prepare import prepare_data
    from mmkd_utils.recipes import build_teacher
    from mmkd_utils.signals import cache_teacher_outputs, multi_view_columns

    config = get_config("tiny", teacher_views=3, students=("image",), methods=("labels", "soft"), distill_from="image")
    data = prepare_data(config)
    n = data.train["label"].shape[0]
    assert data.signals["teacher_views"]["image"].shape == (n, 3, 3, 32, 32)
    teacher = build_teacher("image", config, data)
    views = multi_view_columns(teacher, data)
    clean = cache_teacher_outputs(teacher, data.train, features=True)
    assert views["teacher_logits"].shape[:2] == (n, 3)
    assert torch.allclose(views["teacher_logits"][:, 0], clean["teacher_logits"], atol=1e-5)
    assert torch.allclose(views["teacher_feat"][:, 0], clean["teacher_feat"], atol=1e-5)
    assert not torch.allclose(views["teacher_logits"][:, 1], clean["teacher_logits"])
    rows = run_seed(config, data, seed=0, read_test=False)
    assert [r["method"] for r in rows] == ["labels", "soft"]
