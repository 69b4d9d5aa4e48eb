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


@pytest.mark.parametrize("in_dims, p", [({"a": 5, "b": 7}, 0.2), ({"a": 5, "b": 7, "c": 3}, 0.5)])
def test_modality_dropout_effective_rate_is_p_times_one_minus_p_to_the_m_minus_1(in_dims, p):
    # each modality is dropped with probability p, but an example that would lose all of them keeps all:
    # a modality is dropped with probability p·(1 − p^(M−1)), not p (0.16 for two modalities at p = 0.2)
    m = FusionClassifier(in_dims, num_classes=3, hidden=8, fusion="concat", dropout=0.0, modality_dropout=p).train()
    n, k = 20000, len(in_dims)
    torch.manual_seed(0)
    h = m.embed({key: torch.randn(n, d) for key, d in in_dims.items()})  # (n, M * 8)
    dropped = (h.view(n, k, 8) == 0).all(-1).float()  # (n, M)
    expected = p * (1 - p ** (k - 1))
    standard_error = (expected * (1 - expected) / n) ** 0.5
    assert (dropped.mean(0) - expected).abs().max() < 4 * standard_error
    assert (dropped.sum(1) < k).all()


def test_gated_fusion_is_a_softmax_over_modalities_of_one_shared_scalar_score():
    # what "gated" computes: s_m = w·h_m + b, f = Σ softmax(s)_m h_m; for two modalities the first weight is
    # sigmoid(w·(h_a − h_b)), so the bias cancels (zero gradient); one scalar per modality, not a GMU's gate vector
    m = FusionClassifier({"a": 5, "b": 7}, num_classes=3, hidden=8, fusion="gated").eval()
    x = batch()
    h_a, h_b = m.project["a"](x["a"]), m.project["b"](x["b"])  # (6, 8) each
    weight_a = torch.sigmoid((h_a - h_b) @ m.gate.weight.squeeze(0))[:, None]  # (6, 1)
    assert torch.allclose(m.embed(x), weight_a * h_a + (1 - weight_a) * h_b, atol=1e-6)
    m.embed(x).sum().backward()
    assert m.gate.bias.grad.abs().item() < 1e-6


def test_attention_fusion_is_multi_head_attention_with_an_output_projection_then_a_mean():
    # per head i: softmax(Q_i K_i^T / sqrt(d_k)) V_i with Q_i = H W_Q^i etc.; heads concatenated, times W_O; mean over tokens
    m = FusionClassifier({"a": 5, "b": 7}, num_classes=3, hidden=8, fusion="attention").eval()
    x = batch()
    tokens = torch.stack([m.project["a"](x["a"]), m.project["b"](x["b"])], 1) + m.modality_embedding  # (6, 2, 8)
    attn, heads, d_k = m.attend, 4, 8 // 4
    q, k, v = (tokens @ w.T + b for w, b in zip(attn.in_proj_weight.chunk(3), attn.in_proj_bias.chunk(3)))  # (6, 2, 8)
    split = lambda t: t.view(6, 2, heads, d_k).transpose(1, 2)  # (6, heads, 2, d_k)
    weights = (split(q) @ split(k).transpose(-1, -2) / d_k ** 0.5).softmax(-1)  # (6, heads, 2, 2)
    out = (weights @ split(v)).transpose(1, 2).reshape(6, 2, 8) @ attn.out_proj.weight.T + attn.out_proj.bias
    assert torch.allclose(m.embed(x), out.mean(1), atol=1e-5)


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
