"""Static-shape ROI-align equal to torchvision's `roi_align`, which NeCo uses with aligned=True and
sampling_ratio=-1 to cut each pair's shared region out of the token maps (neco.md §1 "ROI-Align").

Bilinear sampling is separable: a sample at (y, x) weighs pixel (h, w) by wy(h)·wx(w), and
torchvision's out-of-range rule (zero when y or x lies outside [-1, size]) is a product of the
per-axis rules too. So each bin's average over its g_h × g_w samples is

    out[p, q] = Σ_h Σ_w Ay[p, h] · F[h, w] · Ax[q, w] / max(g_h·g_w, 1),
    Ay[p, h] = Σ_{k < g_h} wy(sample k of bin p)[h]     (same for Ax),

two small matmuls per box. The data-dependent sample count g = ceil(roi_size / out) is
handled with a fixed maximum G (static) and a mask k < g (neco.md §1 step 2, §8).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dense_jax.ops import checks

_HIGHEST = jax.lax.Precision.HIGHEST


def _axis_weights(start, bin_size, g, n_max: int, out: int, size: int):
    """Summed bilinear weights (..., out, size) of one axis, torchvision's rule.

    start, bin_size: (...,) float32; g: (...,) int32 samples per bin (≤ n_max).
    """
    p = jnp.arange(out, dtype=jnp.float32)[:, None]
    k = jnp.arange(n_max, dtype=jnp.float32)[None, :]
    g_f = jnp.maximum(g, 1).astype(jnp.float32)[..., None, None]
    s, b = start[..., None, None], bin_size[..., None, None]
    # Same operation order as the CPU kernel: start + p·bin + (k + .5)·bin / g.
    coord = s + p * b + (k + 0.5) * b / g_f  # (..., out, G)
    valid = (coord >= -1.0) & (coord <= size) & (k < g[..., None, None])
    coord = jnp.maximum(coord, 0.0)
    low = jnp.floor(coord).astype(jnp.int32)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    frac = jnp.where(at_edge, 0.0, coord - low)
    w = (1.0 - frac)[..., None] * jax.nn.one_hot(low, size, dtype=jnp.float32) + frac[
        ..., None
    ] * jax.nn.one_hot(high, size, dtype=jnp.float32)
    w = jnp.where(valid[..., None], w, 0.0)  # (..., out, G, size)
    return w.sum(axis=-2)


def roi_align(
    features,
    boxes,
    output_size: int = 7,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
    max_samples=None,
):
    """ROI-align of NHWC `features` (B, H, W, C) over `boxes` (B, 4) or (B, K, 4).

    Boxes are (x1, y1, x2, y2) in feature-map coordinates (before `spatial_scale`); box b (or
    boxes b, :) read image b. Returns (B, [K,] out, out, C) in the features' dtype; geometry
    and accumulation are float32.

    `sampling_ratio > 0` uses that many samples per bin and axis. Otherwise the count is
    ceil(roi_size / out) per box and axis, as torchvision; `max_samples` (int or (gy, gx))
    is its static upper bound, default ceil(H / out), ceil(W / out): enough for every box
    that lies inside the map once scaled. A box needing more samples than the bound (one
    larger than the map) uses the bound instead; the result is exact whenever it is not hit.
    Differentiable w.r.t. `features`; jit-compatible.
    """
    checks.ndim("features", features, 4, "(B, H, W, C)")
    if boxes.ndim not in (2, 3) or boxes.shape[-1] != 4 or boxes.shape[0] != features.shape[0]:
        raise ValueError(
            f"boxes must be (B, 4) or (B, K, 4) with B = {features.shape[0]} (the features' batch), "
            f"got shape {tuple(boxes.shape)}"
        )
    output_size = checks.positive("output_size", output_size)
    if max_samples is not None:
        max_samples = checks.sizes("max_samples", max_samples)
    _, height, width, _ = features.shape
    squeeze = boxes.ndim == 2
    boxes = boxes[:, None] if squeeze else boxes
    boxes = boxes.astype(jnp.float32)
    scale = jnp.float32(spatial_scale)
    offset = jnp.float32(0.5 if aligned else 0.0)
    x1, y1, x2, y2 = (boxes[..., i] * scale - offset for i in range(4))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
    bin_w, bin_h = roi_w / output_size, roi_h / output_size

    if sampling_ratio > 0:
        gy_max = gx_max = sampling_ratio
        g_h = jnp.full(roi_h.shape, sampling_ratio, jnp.int32)
        g_w = jnp.full(roi_w.shape, sampling_ratio, jnp.int32)
    else:
        if max_samples is None:
            gy_max, gx_max = math.ceil(height / output_size), math.ceil(width / output_size)
        else:
            gy_max, gx_max = max_samples
        g_h = jnp.clip(jnp.ceil(roi_h / output_size), 0, gy_max).astype(jnp.int32)
        g_w = jnp.clip(jnp.ceil(roi_w / output_size), 0, gx_max).astype(jnp.int32)
    count = jnp.maximum(g_h * g_w, 1).astype(jnp.float32)

    a_y = _axis_weights(y1, bin_h, g_h, gy_max, output_size, height)  # (B, K, out, H)
    a_x = _axis_weights(x1, bin_w, g_w, gx_max, output_size, width)  # (B, K, out, W)
    feats = features.astype(jnp.float32)
    rows = jnp.einsum("bkph,bhwc->bkpwc", a_y, feats, precision=_HIGHEST)
    out = jnp.einsum("bkpwc,bkqw->bkpqc", rows, a_x, precision=_HIGHEST)
    out = (out / count[..., None, None, None]).astype(features.dtype)
    return out[:, 0] if squeeze else out
