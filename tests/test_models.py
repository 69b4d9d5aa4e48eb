"""Models: shapes, fusion semantics, missing modalities, the student tokenizer, hooks."""
import pytest
import torch

from mmkd_utils.models import (FeatureTaps, FusionClassifier, HashingTokenizer, ImageCNN, MultimodalStudent,
                               TextBag, count_parameters)


def batch(n=6):
    g = torch.Generator().manual_seed(0)
    return {"a": torch.randn(n, 5, generator=g), "b": torch.randn(n, 7, generator=g)}


@pytest.mark.parametrize("fusion", ["concat", "gated", "attention"])
def test_fusion_shapes_and_dropping_a_modality(fusion):
    m = FusionClassifier({"a": 5, "b": 7}, num_classes=3, hidden=8, fusion=fusion).eval()
    assert m(batch()).shape == (6, 3)
    without_b = m(batch(), drop={"b"})
    assert without_b.shape == (6, 3)
    # dropping b means b's values cannot matter
    changed = {**batch(), "b": torch.randn(6, 7)}
    assert torch.allclose(m(changed, drop={"b"}), without_b, atol=1e-6)
    only_a = {"a": batch()["a"]}  # a batch without b at all works when b is dropped
    assert torch.allclose(m(only_a, drop={"b"}), without_b, atol=1e-6)


def test_gated_fusion_of_one_present_modality_is_that_modality():
    m = FusionClassifier({"a": 5, "b": 7}, num_classes=3, hidden=8, fusion="gated").eval()
    x = batch()
    assert torch.allclose(m.embed(x, drop={"b"}), m.project["a"](x["a"]), atol=1e-6)


def test_fusion_errors_name_the_problem():
    m = FusionClassifier({"a": 5, "b": 7}, num_classes=3)
    with pytest.raises(KeyError, match=r"lacks \['b'\]"):
        m({"a": torch.randn(2, 5)})
    with pytest.raises(ValueError, match="every modality dropped"):
        m(batch(), drop={"a", "b"})
    with pytest.raises(ValueError, match="cannot drop"):
        m(batch(), drop={"c"})
    with pytest.raises(ValueError, match="fusion must be"):
        FusionClassifier({"a": 5}, 3, fusion="sum")
    with pytest.raises(ValueError, match="in_dims is empty"):
        FusionClassifier({}, 3)


def test_modality_dropout_never_drops_every_modality():
    m = FusionClassifier({"a": 5, "b": 7}, num_classes=3, hidden=8, fusion="concat", modality_dropout=0.95).train()
    torch.manual_seed(0)
    h = m.embed({"a": torch.randn(200, 5), "b": torch.randn(200, 7)})  # (200, 2 * 8)
    per_modality = h.view(200, 2, 8).abs().sum(-1) > 0  # (200, 2): which modality survived
    assert per_modality.any(1).all()
    assert (~per_modality).any()  # and some were dropped


def test_image_cnn_parameter_count_matches_hand_count():
    # convs 3·16·9 + 16·32·9 + 32·64·9 (no bias) + BN 2·(16+32+64) + head 64·9 + 9
    assert count_parameters(ImageCNN(9, width=16)) == 432 + 4608 + 18432 + 224 + 585
    assert ImageCNN(9)({"image": torch.randn(2, 3, 32, 32)}).shape == (2, 9)


def test_hashing_tokenizer_is_deterministic_and_checks_text():
    a, b = HashingTokenizer(1000), HashingTokenizer(1000)
    ids = a(["grinning face", "flag: Japan"])
    assert torch.equal(ids, b(["grinning face", "flag: Japan"]))
    assert ids.min() >= 0 and ids.max() < 1000
    assert (ids[0] > 0).sum() == len(a.tokens("grinning face"))  # no padding inside the longest row
    assert "w:japan" in a.tokens("flag: Japan") and "c:<ja" in a.tokens("flag: Japan")
    with pytest.raises(ValueError, match="non-empty string"):
        a(["ok", "  "])
    with pytest.raises(ValueError, match="n_buckets"):
        HashingTokenizer(1)


def test_text_bag_ignores_padding():
    m = TextBag(4, n_buckets=100, dim=8).eval()
    ids = torch.tensor([[5, 6, 0, 0]])
    assert torch.allclose(m({"text_ids": ids}), m({"text_ids": ids[:, :2]}), atol=1e-6)


def test_multimodal_student_and_missing_branch():
    m = MultimodalStudent(3, width=4, n_buckets=50, dim=8).eval()
    x = {"image": torch.randn(2, 3, 16, 16), "text_ids": torch.tensor([[1, 2], [3, 0]])}
    assert m(x).shape == (2, 3)
    assert torch.allclose(m({"image": x["image"]}, drop={"text_ids"}), m({**x, "text_ids": torch.tensor([[9, 9], [9, 9]])}, drop={"text_ids"}))


def test_feature_taps_read_intermediate_features_without_editing_forward():
    m = ImageCNN(3, width=4).eval()
    x = {"image": torch.randn(2, 3, 16, 16)}
    with FeatureTaps(m, ["body.6", "body.4"]) as taps:
        m(x)
        assert torch.allclose(taps["body.6"], m.embed(x))
        assert taps["body.4"].shape == (2, 16, 4, 4)  # the third conv block, before pooling
    assert not m.body[6]._forward_hooks  # removed on exit
    with pytest.raises(KeyError, match="no submodule"):
        FeatureTaps(m, ["nope"])


def test_inputs_of_the_wrong_shape_are_refused_clearly():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        ImageCNN(3)({"image": torch.randn(2, 1, 16, 16)})
    with pytest.raises(ValueError, match=r"features of shape \(B, 5\)"):
        FusionClassifier({"a": 5}, 3)({"a": torch.randn(2, 6)})


def test_fusion_teacher_fine_tunes_its_encoders_end_to_end():
    from mmkd_utils.train import TrainConfig, fit

    encoder = torch.nn.Linear(4, 5)  # stands in for a pretrained encoder
    before = encoder.weight.detach().clone()
    teacher = FusionClassifier({"a": 5}, 2, hidden=8, encoders={"a": encoder})
    data = {"a": torch.randn(32, 4), "label": torch.arange(32) % 2}
    fit(teacher, data, config=TrainConfig(epochs=2, batch_size=8))
    assert not torch.equal(before, encoder.weight)  # gradients reached the encoder
