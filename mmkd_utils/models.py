"""Teachers and students (introduced in notebooks 04 and 05).

Every model takes a *batch dict* and reads only the keys it needs (its ``inputs``), so a teacher and
a student can see different modalities, tokenizers or image sizes from the same batch:

- ``FusionClassifier``: a teacher over any set of modalities (features of frozen pretrained encoders,
  or the encoders themselves), fused at the feature level (intermediate fusion) by concatenation, a
  softmax weighting of the modalities, or attention over modality tokens. A modality can be dropped
  at test time (``drop=``) to measure robustness.
- ``ImageCNN``: a tiny image student on raw pixels.
- ``TextBag``: a tiny text student: hashed word and character-trigram embeddings, averaged.
- ``MultimodalStudent``: both tiny branches, fused by concatenation.
- ``FeatureTaps``: read intermediate features through forward hooks, without editing ``forward``.
"""
from __future__ import annotations

import hashlib
import re
from typing import Mapping, Sequence

import torch
from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those that require grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _require(batch: Mapping, keys: Sequence[str], model: nn.Module) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"{type(model).__name__} reads {list(keys)} but the batch lacks {missing} "
                       f"(batch keys: {sorted(batch)}). Add that modality to the data, or pass drop={set(missing)} "
                       "to a fusion model to evaluate without it.")


def _check_drop(drop, inputs: Sequence[str]) -> None:
    """A modality dropped at test time must be one the model reads, and one must remain."""
    unknown = set(drop) - set(inputs)
    if unknown:
        raise ValueError(f"cannot drop {sorted(unknown)}: this model reads {list(inputs)}")
    if set(drop) == set(inputs):
        raise ValueError("every modality dropped: keep at least one")


# ------------------------------------------------------------------------------------ teacher
class FusionClassifier(nn.Module):
    """Feature-level fusion over any set of modalities.

    Each modality's features are projected, the projections are fused into one vector, and one head
    classifies that vector: the modalities meet as features, before any decision. Baltrušaitis et al.
    (2019) call fusing extracted features *early* (feature-based) fusion; since each modality first
    has its own encoder and learned projection, deep-learning papers often call this *intermediate*
    fusion. It is not *late* (decision-based) fusion, which combines per-modality decisions (e.g. the
    averaged probabilities of one classifier per modality).

    ``in_dims`` maps each input key (e.g. ``"image_feat"``, ``"text_feat"``) to its feature size. Each
    modality is projected to ``hidden`` dims (LayerNorm, dropout, linear, GELU): ``h_m``. Then:
    - ``"concat"``: concatenate the projections, (B, M·hidden);
    - ``"gated"``: one scalar score per modality, ``s_m = w·h_m + b`` (the same ``w`` for every
      modality), a softmax over the modalities present, and the weighted sum of the ``h_m``, (B, hidden).
      ``b`` adds the same to every score, so the softmax cancels it; with two modalities the first one's
      weight is ``sigmoid(w·(h_1 − h_2))``. This is not Arevalo et al. (2017)'s gated multimodal unit,
      whose gate is a *vector* (one weight per hidden unit) computed from both inputs together,
      ``z = sigmoid(W_z [x_1; x_2])``, mixing ``tanh`` projections: ``z ⊙ h_1 + (1 − z) ⊙ h_2``;
    - ``"attention"``: the tokens ``h_m + e_m`` (a learned embedding per modality) go through one
      ``nn.MultiheadAttention`` layer (4 heads, each with its own query, key and value projections; the
      heads' outputs concatenated and mixed by the output projection ``W_O``; attention dropout while
      training; padding mask on dropped modalities), then the mean over the tokens present, (B, hidden).
      No residual connection, layer norm or feed-forward block: not a full Transformer layer.
    ``encoders`` (optional) maps an input key to a module applied first (a pretrained encoder, frozen
    or fine-tuned); without it the inputs are precomputed features. ``modality_dropout`` (p) drops whole
    modalities during training, which makes the model robust to a missing modality at test time: each
    modality of each example is dropped independently with probability p, and an example that would
    lose every modality keeps them all, so a modality is dropped with probability p·(1 − p^(M−1)) —
    p·(1 − p) with two modalities (0.16 for p = 0.2), not p.
    """

    def __init__(self, in_dims: Mapping[str, int], num_classes: int, hidden: int = 256, fusion: str = "concat",
                 dropout: float = 0.3, modality_dropout: float = 0.0, encoders: Mapping[str, nn.Module] | None = None):
        super().__init__()
        if fusion not in ("concat", "gated", "attention"):
            raise ValueError(f"fusion must be 'concat', 'gated' or 'attention', got {fusion!r}")
        if not in_dims:
            raise ValueError("in_dims is empty: give at least one modality, e.g. {'text_feat': 384}")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        self.inputs = tuple(in_dims)
        self.fusion, self.modality_dropout, self.num_classes = fusion, modality_dropout, num_classes
        self.encoders = nn.ModuleDict(dict(encoders or {}))
        self.project = nn.ModuleDict({k: nn.Sequential(nn.LayerNorm(d), nn.Dropout(dropout), nn.Linear(d, hidden), nn.GELU())
                                      for k, d in in_dims.items()})
        if fusion == "gated":
            self.gate = nn.Linear(hidden, 1)
        if fusion == "attention":
            self.attend = nn.MultiheadAttention(hidden, num_heads=4, dropout=dropout, batch_first=True)
            self.modality_embedding = nn.Parameter(torch.zeros(len(in_dims), hidden))
        fused = hidden * len(in_dims) if fusion == "concat" else hidden
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(fused, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))

    def embed(self, batch: Mapping, drop: set[str] | frozenset[str] = frozenset()) -> torch.Tensor:
        """The fused representation (B, fused_dim) — what feature distillation matches."""
        _check_drop(drop, self.inputs)
        _require(batch, [k for k in self.inputs if k not in drop], self)
        projected = {k: self.project[k](self._encoded(batch, k)) for k in self.inputs if k not in drop}  # each (B, hidden)
        ref = next(iter(projected.values()))
        mask = torch.stack([ref.new_full((ref.shape[0],), float(k in projected)) for k in self.inputs], 1)  # (B, M)
        if self.training and self.modality_dropout > 0:
            keep = (torch.rand(mask.shape, device=ref.device) >= self.modality_dropout).to(ref.dtype) * mask
            none_left = keep.sum(1) == 0
            keep[none_left] = mask[none_left]  # never drop every modality: such an example keeps all, so
            # a modality's effective drop rate is p·(1 − p^(M−1)), p·(1 − p) for two modalities
            mask = keep
        h = torch.stack([projected.get(k, torch.zeros_like(ref)) for k in self.inputs], 1) * mask[..., None]  # (B, M, hidden)
        if self.fusion == "concat":
            return h.flatten(1)  # (B, M*hidden)
        if self.fusion == "gated":
            scores = self.gate(h).squeeze(-1).masked_fill(mask == 0, float("-inf"))  # (B, M)
            return (scores.softmax(1).unsqueeze(-1) * h).sum(1)  # (B, hidden)
        h = h + self.modality_embedding
        out, _ = self.attend(h, h, h, key_padding_mask=mask == 0)
        return (out * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, hidden)

    def _encoded(self, batch: Mapping, k: str) -> torch.Tensor:
        x = batch[k]
        if k in self.encoders:
            x = self.encoders[k](**x) if isinstance(x, Mapping) else self.encoders[k](x)
        expected = self.project[k][0].normalized_shape[0]
        if x.dim() != 2 or x.shape[1] != expected:
            raise ValueError(f"input {k!r} should be features of shape (B, {expected}), got {tuple(x.shape)}; "
                             "was the model built for another encoder or configuration?")
        return x

    def forward(self, batch: Mapping, drop: set[str] | frozenset[str] = frozenset()) -> torch.Tensor:
        return self.head(self.embed(batch, drop))  # (B, num_classes)


# ----------------------------------------------------------------------------------- students
def conv_body(in_channels: int, width: int) -> nn.Sequential:
    """The tiny CNN body of the image and audio students: 3 conv blocks (width w, 2w, 4w), global average pooling."""
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    return nn.Sequential(block(in_channels, width), nn.MaxPool2d(2), block(width, 2 * width), nn.MaxPool2d(2),
                         block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class ImageCNN(nn.Module):
    """A tiny CNN on raw pixels: 3 conv blocks (width w, 2w, 4w), global average pooling, a linear head.

    With ``width=16`` it has about 24 k parameters. Reads ``batch[input_key]`` of shape (B, 3, H, W).
    """

    def __init__(self, num_classes: int, width: int = 16, input_key: str = "image", dropout: float = 0.1):
        super().__init__()
        self.inputs = (input_key,)

        self.body = conv_body(3, width)  # (B, 3, H, W) -> (B, 4w)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_classes))
        self.out_dim = 4 * width

    def embed(self, batch: Mapping) -> torch.Tensor:
        _require(batch, self.inputs, self)
        x = batch[self.inputs[0]]
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ImageCNN expects images of shape (B, 3, H, W), got {tuple(x.shape)}; convert "
                             "grey or RGBA images to RGB (mmkd_utils.data.ImageTransform does) and batch them.")
        return self.body(x)  # (B, 4w)

    def forward(self, batch: Mapping) -> torch.Tensor:
        return self.head(self.embed(batch))  # (B, num_classes)


class HashingTokenizer:
    """The text student's own tokenizer: words and character trigrams hashed into ``n_buckets`` ids.

    Deterministic (MD5, not Python's salted ``hash``); id 0 is padding. ``__call__(texts)`` returns
    a (B, L) LongTensor padded with zeros.
    """

    def __init__(self, n_buckets: int = 2**14, char_ngrams: int = 3, max_tokens: int = 64):
        if n_buckets < 2:
            raise ValueError(f"n_buckets must be at least 2, got {n_buckets}")
        self.n_buckets, self.char_ngrams, self.max_tokens = n_buckets, char_ngrams, max_tokens

    def tokens(self, text: str) -> list[str]:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text must be a non-empty string, got {text!r}")
        words = re.findall(r"\w+", text.lower()) or [text.lower().strip()]
        grams = []
        if self.char_ngrams:
            for w in words:
                padded = f"<{w}>"
                grams += [padded[i:i + self.char_ngrams] for i in range(max(1, len(padded) - self.char_ngrams + 1))]
        return [f"w:{w}" for w in words] + [f"c:{g}" for g in grams]

    def _id(self, token: str) -> int:
        return 1 + int.from_bytes(hashlib.md5(token.encode("utf8")).digest()[:8], "little") % (self.n_buckets - 1)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        rows = [[self._id(t) for t in self.tokens(s)][: self.max_tokens] for s in texts]
        out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out  # (B, L)


class TextBag(nn.Module):
    """A tiny text student: mean of hashed word and trigram embeddings, then an MLP head.

    Reads ``batch[input_key]``: token ids (B, L) from ``HashingTokenizer``, 0 = padding.
    """

    def __init__(self, num_classes: int, n_buckets: int = 2**14, dim: int = 64, input_key: str = "text_ids",
                 dropout: float = 0.2):
        super().__init__()
        self.inputs = (input_key,)
        self.embedding = nn.EmbeddingBag(n_buckets, dim, mode="mean", padding_idx=0)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Dropout(dropout), nn.Linear(dim, dim), nn.GELU())
        self.head = nn.Linear(dim, num_classes)
        self.out_dim = dim

    def embed(self, batch: Mapping) -> torch.Tensor:
        _require(batch, self.inputs, self)
        return self.mlp(self.embedding(batch[self.inputs[0]]))  # (B, dim)

    def forward(self, batch: Mapping) -> torch.Tensor:
        return self.head(self.embed(batch))


class MultimodalStudent(nn.Module):
    """A small student that sees both modalities: ``ImageCNN`` and ``TextBag`` bodies, concatenated."""

    def __init__(self, num_classes: int, width: int = 16, n_buckets: int = 2**14, dim: int = 64,
                 image_key: str = "image", text_key: str = "text_ids", dropout: float = 0.1):
        super().__init__()
        self.image = ImageCNN(num_classes, width, image_key)
        self.text = TextBag(num_classes, n_buckets, dim, text_key)
        self.image.head = self.text.head = nn.Identity()  # only their bodies are used: no unused parameters
        self.inputs = self.image.inputs + self.text.inputs
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.image.out_dim + self.text.out_dim, num_classes))
        self.out_dim = self.image.out_dim + self.text.out_dim

    def embed(self, batch: Mapping, drop: set[str] | frozenset[str] = frozenset()) -> torch.Tensor:
        """(B, out_dim); a branch named in ``drop`` (by its input key) contributes zeros."""
        _check_drop(drop, self.inputs)
        parts = []
        for branch in (self.image, self.text):
            if branch.inputs[0] in drop:
                n = next(v for k, v in batch.items() if k in self.inputs and k not in drop).shape[0]
                parts.append(self.head[-1].weight.new_zeros(n, branch.out_dim))
            else:
                parts.append(branch.embed(batch))
        return torch.cat(parts, 1)

    def forward(self, batch: Mapping, drop: set[str] | frozenset[str] = frozenset()) -> torch.Tensor:
        return self.head(self.embed(batch, drop))


# ------------------------------------------------------------------------------ forward hooks
class FeatureTaps:
    """Record the outputs of named submodules during ``forward``, through hooks.

    >>> with FeatureTaps(model, ["body.5"]) as taps:
    ...     logits = model(batch)
    ...     feats = taps["body.5"]
    """

    def __init__(self, model: nn.Module, names: Sequence[str]):
        modules = dict(model.named_modules())
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise KeyError(f"{type(model).__name__} has no submodule(s) {unknown}; "
                           f"some it has: {[n for n in modules if n][:12]}")
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self.outputs[name] = output
        return hook

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.outputs[name]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


# ------------------------------------------------------------------------------- audio student
class AudioCNN(nn.Module):
    """A tiny audio student on log-mel spectrograms (issue 23's speech modality; inputs from
    ``audio.student_log_mel``): 3 conv blocks (width w, 2w, 4w) over (mel band, time), global average pooling,
    a linear head. With ``width=16`` it has about 24 k parameters. Reads ``batch[input_key]`` of shape
    (B, 1, n_mels, frames), any float dtype (the cached float16 inputs are cast to the weights' dtype).
    """

    def __init__(self, num_classes: int, width: int = 16, input_key: str = "audio", dropout: float = 0.1):
        super().__init__()
        self.inputs = (input_key,)

        self.body = conv_body(1, width)  # (B, 1, H, W) -> (B, 4w)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_classes))
        self.out_dim = 4 * width

    def embed(self, batch: Mapping) -> torch.Tensor:
        _require(batch, self.inputs, self)
        x = batch[self.inputs[0]]
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"AudioCNN expects log-mel spectrograms of shape (B, 1, n_mels, frames), got "
                             f"{tuple(x.shape)}; make them with mmkd_utils.audio.student_log_mel")
        return self.body(x.to(self.head[-1].weight.dtype))  # (B, 4w)

    def forward(self, batch: Mapping) -> torch.Tensor:
        return self.head(self.embed(batch))  # (B, num_classes)
