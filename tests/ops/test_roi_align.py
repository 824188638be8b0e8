"""ROI-align vs a literal NumPy port of torchvision's CPU kernel (neco.md §1, §7 check 8)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dense_jax.ops.roi_align import roi_align as _roi_align

f32 = np.float32
roi_align = jax.jit(
    _roi_align, static_argnames=("output_size", "spatial_scale", "sampling_ratio", "aligned", "max_samples")
)


def _torchvision_roi_align(feat, rois, out, scale, sampling_ratio, aligned):
    """Loop port of torchvision/csrc/ops/cpu/roi_align_kernel.cpp (float32 arithmetic).

    feat: (B, H, W, C); rois: (R, 5) rows (batch index, x1, y1, x2, y2). Returns (R, out, out, C).
    """
    _, height, width, chans = feat.shape
    res = np.zeros((len(rois), out, out, chans), f32)
    scale = f32(scale)
    for n, roi in enumerate(rois):
        b = int(roi[0])
        offset = f32(0.5) if aligned else f32(0.0)
        sw, sh = f32(roi[1]) * scale - offset, f32(roi[2]) * scale - offset
        ew, eh = f32(roi[3]) * scale - offset, f32(roi[4]) * scale - offset
        rw, rh = ew - sw, eh - sh
        if not aligned:
            rw, rh = max(rw, f32(1.0)), max(rh, f32(1.0))
        bh, bw = rh / f32(out), rw / f32(out)
        gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rh / f32(out)))
        gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rw / f32(out)))
        count = f32(max(gh * gw, 1))
        for ph in range(out):
            for pw in range(out):
                acc = np.zeros(chans, f32)
                for iy in range(gh):
                    yy = sh + f32(ph) * bh + f32(iy + 0.5) * bh / f32(gh)
                    for ix in range(gw):
                        xx = sw + f32(pw) * bw + f32(ix + 0.5) * bw / f32(gw)
                        y, x = yy, xx
                        if not (-1.0 <= y <= height and -1.0 <= x <= width):
                            continue
                        y, x = max(y, f32(0)), max(x, f32(0))
                        y_lo, x_lo = int(y), int(x)
                        if y_lo >= height - 1:
                            y_hi = y_lo = height - 1
                            y = f32(y_lo)
                        else:
                            y_hi = y_lo + 1
                        if x_lo >= width - 1:
                            x_hi = x_lo = width - 1
                            x = f32(x_lo)
                        else:
                            x_hi = x_lo + 1
                        ly, lx = y - f32(y_lo), x - f32(x_lo)
                        hy, hx = f32(1) - ly, f32(1) - lx
                        acc += (
                            hy * hx * feat[b, y_lo, x_lo]
                            + hy * lx * feat[b, y_lo, x_hi]
                            + ly * hx * feat[b, y_hi, x_lo]
                            + ly * lx * feat[b, y_hi, x_hi]
                        )
                res[n, ph, pw] = acc / count
    return res


def _random_boxes(rng, batch, per_image, size):
    """Mixed boxes: tiny (< one bin), touching/exceeding borders, full-map, random."""
    boxes = []
    for _ in range(batch):
        img = [
            [0.0, 0.0, size, size],  # whole map: g = G_max
            [0.0, 0.0, 1.3, 0.7],  # smaller than one bin
            [size - 2.0, size - 3.0, size + 1.5, size + 0.5],  # crosses bottom/right
            [-1.7, -0.4, 4.0, size - 0.6],  # crosses top/left
            [5.0, 6.0, 5.0, 9.0],  # zero width
            [-1.0, size - 6.0, 6.0, size + 1.0],  # samples at x=-1, y=size
            [3.25, 1.5, 3.25 + size / 2.0, 1.5 + size / 3.0],
        ]
        while len(img) < per_image:
            x1, y1 = rng.uniform(-1.0, size - 1.0, 2)
            w, h = rng.uniform(0.2, size - max(x1, 0.0)), rng.uniform(0.2, size - max(y1, 0.0))
            img.append([x1, y1, x1 + w, y1 + h])
        boxes.append(img[:per_image])
    return np.asarray(boxes, f32)


def _flat_rois(boxes):
    b, k = boxes.shape[:2]
    return np.concatenate([np.repeat(np.arange(b, dtype=f32), k)[:, None], boxes.reshape(-1, 4)], axis=1)


@pytest.mark.parametrize("size,out,scale", [(13, 7, 1.0), (9, 4, 0.5), (7, 7, 1.0)])
def test_matches_torchvision_kernel_adaptive(size, out, scale):
    rng = np.random.default_rng(size)
    feat = rng.normal(size=(2, size, size, 5)).astype(f32)
    boxes = _random_boxes(rng, 2, 10, size) / f32(scale)
    got = np.asarray(roi_align(feat, boxes, out, spatial_scale=scale))
    want = _torchvision_roi_align(feat, _flat_rois(boxes), out, scale, -1, True)
    assert got.shape == (2, 10, out, out, 5)
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-5, rtol=0)


def test_matches_torchvision_kernel_fixed_ratio_and_unaligned():
    rng = np.random.default_rng(1)
    feat = rng.normal(size=(2, 11, 8, 3)).astype(f32)
    boxes = _random_boxes(rng, 2, 8, 8)
    for ratio, aligned in [(2, True), (3, False), (-1, False)]:
        got = np.asarray(roi_align(feat, boxes, 5, sampling_ratio=ratio, aligned=aligned))
        want = _torchvision_roi_align(feat, _flat_rois(boxes), 5, 1.0, ratio, aligned)
        np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-5, rtol=0)


def test_single_box_per_image_shape_and_dtype():
    rng = np.random.default_rng(2)
    feat = rng.normal(size=(3, 10, 10, 4)).astype(f32)
    boxes = np.asarray([[0, 0, 10, 10], [2, 3, 7, 9.5], [1, 1, 1.5, 1.5]], f32)
    got = roi_align(jnp.asarray(feat, jnp.bfloat16), boxes, 7)
    assert got.shape == (3, 7, 7, 4) and got.dtype == jnp.bfloat16
    want = _torchvision_roi_align(feat, _flat_rois(boxes[:, None]), 7, 1.0, -1, True)
    np.testing.assert_allclose(np.asarray(roi_align(feat, boxes, 7)), want, atol=1e-5, rtol=0)


def test_box_larger_than_bound_uses_bound():
    """Boxes beyond max_samples fall back to max_samples per bin (documented); explicit
    max_samples restores exactness."""
    rng = np.random.default_rng(3)
    feat = rng.normal(size=(1, 7, 7, 2)).astype(f32)
    boxes = np.asarray([[[-6.0, -6.0, 13.0, 13.0]]], f32)  # g = 3 > G_max = 1
    want3 = _torchvision_roi_align(feat, _flat_rois(boxes), 7, 1.0, -1, True)
    want1 = _torchvision_roi_align(feat, _flat_rois(boxes), 7, 1.0, 1, True)
    np.testing.assert_allclose(
        np.asarray(roi_align(feat, boxes, 7, max_samples=3))[0], want3, atol=1e-5, rtol=0
    )
    np.testing.assert_allclose(np.asarray(roi_align(feat, boxes, 7))[0], want1, atol=1e-5, rtol=0)


def test_gradient_matches_adjoint_and_is_finite():
    rng = np.random.default_rng(4)
    feat = rng.normal(size=(2, 9, 9, 3)).astype(f32)
    boxes = _random_boxes(rng, 2, 7, 9)
    cot = rng.normal(size=(2, 7, 7, 7, 3)).astype(f32)
    grad = jax.grad(lambda f: jnp.sum(roi_align(f, jnp.asarray(boxes), 7) * cot))(feat)
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0
    # roi_align is linear in the features: <grad, e_i> equals the forward of a basis map
    flat = _flat_rois(boxes)
    for idx in [(0, 0, 0, 0), (1, 8, 8, 2), (0, 4, 5, 1)]:
        basis = np.zeros_like(feat)
        basis[idx] = 1.0
        fwd = _torchvision_roi_align(basis, flat, 7, 1.0, -1, True)
        np.testing.assert_allclose(grad[idx], np.sum(fwd * cot.reshape(fwd.shape)), atol=1e-4, rtol=1e-5)
