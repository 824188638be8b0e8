"""Position-embedding resizing that reproduces torch's bicubic interpolation exactly.

`jax.image.resize` differs from `torch.nn.functional.interpolate(mode="bicubic")` in the
cubic coefficient, the border handling and the source-coordinate rule (neco.md §2,
comus.md §3), so the references' resized position embeddings cannot be matched with it.
Instead each axis is resized by a fixed (out, in) matrix built once in numpy; the 2-D
resize is then ``W_rows @ grid @ W_cols^T``, linear in the trainable embedding and
therefore differentiable.

Two torch code paths are covered:

* plain bicubic (``antialias=False``): cubic convolution with A = -0.75, four taps,
  edge indices clamped; the source coordinate is ``(dst + 0.5) * scale - 0.5`` with
  ``scale = 1 / scale_factor`` when a scale factor is given (DINO, DINOv2 and NeCo pass
  ``(g + 0.1) / M``), else ``in / out``.
* anti-aliased bicubic (``antialias=True``, the official DINOv2 register models, which
  pass ``size=g``): PIL-style kernel with A = -0.5, support stretched by the scale when
  downsampling, weights renormalised over the taps that fall inside the input.
"""

from __future__ import annotations

import functools

import numpy as np


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel at the four taps around a fractional offset t."""

    def near(x):  # |x| <= 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return np.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], axis=-1)


def _aa_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=None)
def bicubic_matrix(in_size: int, out_size: int, offset: float = 0.1, antialias: bool = False) -> np.ndarray:
    """(out_size, in_size) float64 matrix of torch's 1-D bicubic resize.

    ``offset > 0`` means torch was called with ``scale_factor=(out_size + offset) / in_size``
    (the DINO "+0.1" trick); ``offset == 0`` means it was called with ``size=out_size``.
    """
    scale = in_size / (out_size + offset) if offset else in_size / out_size
    matrix = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    if not antialias:
        src = (rows + 0.5) * scale - 0.5
        base = np.floor(src)
        weights = _cubic_weights(src - base, a=-0.75)
        for tap in range(4):
            cols = np.clip(base.astype(np.int64) - 1 + tap, 0, in_size - 1)
            np.add.at(matrix, (rows, cols), weights[:, tap])
        return matrix
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    for i in rows:
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        w = _aa_cubic((taps - center + 0.5) * inv_scale)
        matrix[i, lo:hi] = w / w.sum()
    return matrix


def resize_matrices(
    grid: int, out_hw: tuple[int, int], offset: float, antialias: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """Row and column matrices taking a (grid, grid) embedding to ``out_hw``.

    Returns None when the references skip interpolation (square input at the native grid).
    """
    if out_hw == (grid, grid):
        return None
    return (
        bicubic_matrix(grid, out_hw[0], offset, antialias),
        bicubic_matrix(grid, out_hw[1], offset, antialias),
    )
