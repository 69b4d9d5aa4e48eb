"""Cached multi-view teacher outputs: the teacher labels several augmented views of each training
image once, and the student trains on those very views ("consistent teaching").

Why: a frozen teacher's logits cached on the *clean* image disagree with what the teacher would say
about the shifted, rescaled image the student actually sees (Beyer et al., "Knowledge distillation: a
good teacher is patient and consistent", CVPR 2022); running the teacher online on every batch fixes
that but costs ~15× a plain epoch here (``results/bench``). Caching V views (as in FKD, Shen & Xing,
ECCV 2022) keeps both: the teacher's features for each view are computed once, on disk, and the
student's loop only picks a view per example (``cached_view_augment``).

Each view is one random affine transform of the source image (64 px), rendered at the teacher's size
and at the student's size from the same transformed image, so both see the same content. View 0 is
the untouched image. Introduced in notebook 05. ``shift_augment`` is the plain alternative: random
translations of the student's own pixels, drawn anew each epoch (the teacher's cached logits then
describe the unshifted image).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

VIEWS_VERSION = 1  # bump when the augmentation changes, so cached views are recomputed


@dataclass(frozen=True)
class ViewAugment:
    """A random affine transform of an emoji on its white background: shift by up to ``max_shift`` of
    the image size, scale in ``scale``, rotate by up to ``rotate`` degrees, mirror with probability
    ``flip``. Deterministic given the ``numpy.random.Generator`` passed in."""

    max_shift: float = 0.125
    scale: tuple[float, float] = (0.8, 1.1)
    rotate: float = 10.0
    flip: float = 0.5

    def __post_init__(self):
        if not 0 <= self.max_shift < 0.5:
            raise ValueError(f"max_shift is a share of the image size in [0, 0.5), got {self.max_shift}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip is a probability in [0, 1], got {self.flip}")

    def __call__(self, image, rng: np.random.Generator):
        from PIL import Image, ImageOps

        image = image.convert("RGB")
        w, h = image.size
        if rng.random() < self.flip:
            image = ImageOps.mirror(image)
        s = rng.uniform(*self.scale)
        angle = np.deg2rad(rng.uniform(-self.rotate, self.rotate))
        tx, ty = rng.uniform(-self.max_shift, self.max_shift, size=2) * (w, h)
        # PIL's affine maps output pixels to input pixels: the inverse of "scale and rotate about the
        # centre, then shift". The border is filled with the white background.
        cos, sin = np.cos(angle) / s, np.sin(angle) / s
        cx, cy = w / 2, h / 2
        a, b, d, e = cos, sin, -sin, cos
        c = cx - a * (cx + tx) - b * (cy + ty)
        f = cy - d * (cx + tx) - e * (cy + ty)
        return image.transform((w, h), Image.Transform.AFFINE, (a, b, c, d, e, f),
                               resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))


def augmented_views(split, n_views: int, seed: int = 0, augment: ViewAugment | None = None,
                    column: str = "image") -> list[list]:
    """``n_views`` PIL images per row of ``split``: view 0 is the original, views 1.. are ``augment``ed
    with a generator seeded by (seed, row), so the same call always gives the same views."""
    if n_views < 1:
        raise ValueError(f"n_views must be at least 1, got {n_views}")
    augment = augment or ViewAugment()
    out = []
    for row, image in enumerate(split[column]):
        rng = np.random.default_rng([seed, row])
        out.append([image] + [augment(image, rng) for _ in range(n_views - 1)])
    return out


def encode_views(split, encoder, n_views: int, *, teacher_size: int = 96, student_size: int = 32, seed: int = 0,
                 augment: ViewAugment | None = None, device="cpu", batch_size: int = 128,
                 cache: bool = True) -> dict[str, torch.Tensor]:
    """The frozen image ``encoder``'s features of ``n_views`` views of every training image, and the
    same views as the student sees them: ``{"image_feat": (N, V, D), "image": (N, V, 3, s, s)}``.

    Cached on disk under a key of the encoder's weights, the data, the views and the sizes; view 0
    reproduces ``encode_split`` and ``data.images_tensor`` exactly.
    """
    from .data import ImageTransform
    from .encoders import weights_fingerprint, cached_tensors, split_fingerprint

    augment = augment or ViewAugment()
    key_parts = [VIEWS_VERSION, getattr(encoder, "name", type(encoder).__name__), weights_fingerprint(encoder),
                 split_fingerprint(split, ["image"]), n_views, seed, sorted(asdict(augment).items()), teacher_size,
                 student_size]

    @torch.no_grad()
    def compute() -> dict[str, torch.Tensor]:
        views = augmented_views(split, n_views, seed, augment)
        flat = [im for row in views for im in row]  # row-major: (N * V)
        teacher_tf, student_tf = ImageTransform(teacher_size), ImageTransform(student_size)
        model = encoder.to(device).eval()
        feats = [model(torch.stack([teacher_tf(im) for im in flat[start:start + batch_size]]).to(device)).float().cpu()
                 for start in range(0, len(flat), batch_size)]
        n = len(views)
        return {"image_feat": torch.cat(feats).view(n, n_views, -1),
                "image": torch.stack([student_tf(im) for im in flat]).view(n, n_views, 3, student_size, student_size)}

    return cached_tensors("views", key_parts, compute, cache)


# ------------------------------------------------------------------- batch augmentations in the loop
def shift_augment(max_shift: int = 4, flip: bool = False, key: str = "image"):
    """A batch augmentation for image students: a random translation by up to ``max_shift`` pixels
    (the border is extended by replicating edge pixels, i.e. the white background) and optional
    horizontal flips. Seeded by the loop's generator, so runs repeat."""

    def augment(batch: dict, gen: torch.Generator) -> dict:
        x = batch[key]  # (B, 3, H, W)
        b, _, h, w = x.shape
        padded = F.pad(x, (max_shift,) * 4, mode="replicate")
        dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
        dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None]).long()  # (B, H)
        cols = (dx[:, None] + torch.arange(w)[None]).long()  # (B, W)
        out = padded[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                     rows[:, None, :, None], cols[:, None, None, :]]
        if flip:
            mask = torch.rand(b, generator=gen) < 0.5
            out[mask] = out[mask].flip(-1)
        return {**batch, key: out}

    return augment


def cached_view_augment(keys: tuple[str, ...] = ("image", "teacher_logits")):
    """Pick one of V cached views per example: each ``keys`` column has shape (N, V, ...) and the same
    view index is used for all of them, so the student sees the very view the teacher labelled."""

    def augment(batch: dict, gen: torch.Generator) -> dict:
        n, n_views = batch[keys[0]].shape[:2]
        pick = torch.randint(0, n_views, (n,), generator=gen)
        return {**batch, **{k: batch[k][torch.arange(n), pick] for k in keys}}

    return augment
