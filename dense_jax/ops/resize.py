"""Resizes with the references' torch semantics (evaluation.md §0): nearest for labels and
cluster maps, bilinear with half-pixel centres for logits."""

from __future__ import annotations

import jax
import numpy as np

from dense_jax.ops import checks


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of every output index under torch ``F.interpolate(mode="nearest")``:
    floor(i * n_in / n_out) in float32 (the references' 448 -> 100 label and g -> 100 cluster
    resizes). PIL's NEAREST (used for image-file masks) is ``eval_transform``'s business."""
    scale = np.float32(n_in) / np.float32(n_out)
    return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), n_in - 1)


def nearest_resize(x, size: int | tuple[int, int]):
    """Torch-nearest resize of the last two axes of a numpy or JAX array to ``size``."""
    h, w = checks.sizes("size", size)
    rows = nearest_indices(x.shape[-2], h)
    cols = nearest_indices(x.shape[-1], w)
    return x[..., rows[:, None], cols[None, :]]


def bilinear_upsample(x: jax.Array, size: int | tuple[int, int]) -> jax.Array:
    """(B, h, w, C) -> (B, H, W, C) bilinear with half-pixel centres, i.e. torch
    ``F.interpolate(mode="bilinear", align_corners=False)`` when upsampling."""
    h, w = checks.sizes("size", size)
    return jax.image.resize(x, (x.shape[0], h, w, x.shape[-1]), "bilinear", antialias=False)
