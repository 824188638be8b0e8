"""Device photometric ops (dense_jax/data/photometric.py) against PIL on the same draws.

Tolerance: none on the uint8 values. Every op re-implements Pillow's own rounding (uint8
after each op, truncating blends, fixed-point box blur, integer HSV), so the JAX path gives
the same uint8 views as the PIL path, and the normalised floats differ only in the last
bits of the division by 255 (XLA multiplies by the reciprocal), hence ``atol=1e-6``. The
blend must not become an FMA (`test_blend_rounds_like_pil_where_an_fma_would_not`); run
this file on a GPU host too (``JAX_PLATFORMS=cuda``).
"""

import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from configs import croc_coco, dino_coco, neco_dinov2
from dense_jax.data import photometric as P
from dense_jax.data import pipeline
from dense_jax.data import transforms as T


def _images(rng, n, h, w):
    """Smooth colour fields plus noise (photo-like statistics, every level present)."""
    coarse = rng.integers(0, 256, (n, h // 4 + 1, w // 4 + 1, 3)).astype(np.uint8)
    smooth = np.stack([np.asarray(Image.fromarray(c).resize((w, h), Image.BICUBIC)) for c in coarse])
    return np.clip(smooth.astype(int) + rng.integers(-8, 9, smooth.shape), 0, 255).astype(np.uint8)


def _pil(images, fn):
    return np.stack([np.asarray(fn(i, Image.fromarray(a))) for i, a in enumerate(images)])


def _colours(count):
    """`count` distinct 24-bit colours (all of them for 2²⁴) as a (count / 1024, 1024, 3) image."""
    code = np.random.default_rng(2).permutation(1 << 24)[:count].astype(np.uint32)
    rgb = np.stack([code >> 16, (code >> 8) & 255, code & 255], -1).astype(np.uint8)
    return rgb.reshape(-1, 1024, 3)


def _check_hue(rgb):
    """rgb → hsv → rgb with a hue shift, and hsv → rgb of `rgb` read as HSV triples:
    bit-equal to Pillow's Convert.c."""
    factor = 0.137
    shifted = jax.jit(P.hue)(jnp.asarray(rgb, jnp.int32), jnp.int32(int(factor * 255)))
    np.testing.assert_array_equal(shifted, np.asarray(T._adjust_hue(Image.fromarray(rgb), factor)))
    planes = [Image.fromarray(rgb[..., c]) for c in range(3)]
    back = jax.jit(P._hsv_to_rgb)(*(jnp.asarray(rgb[..., c], jnp.int32) for c in range(3)))
    np.testing.assert_array_equal(back, np.asarray(Image.merge("HSV", planes).convert("RGB")))


def test_hue_equals_pil():
    _check_hue(_colours(1 << 18))


@pytest.mark.slow
def test_hue_equals_pil_on_every_colour():
    _check_hue(_colours(1 << 24))


def test_each_op_equals_pil():
    rng = np.random.default_rng(0)
    images = _images(rng, 16, 37, 45)
    x = jnp.asarray(images, jnp.int32)
    factor = rng.uniform(0.0, 1.9, len(images)).astype(np.float32)
    factor[:2] = (0.0, 1.0)  # Blend.c's copy shortcuts
    f = jnp.asarray(factor)
    cases = {
        "brightness": (
            lambda i, a: ImageEnhance.Brightness(a).enhance(float(factor[i])),
            P.blend(0 * x, x, f),
        ),
        "contrast": (lambda i, a: ImageEnhance.Contrast(a).enhance(float(factor[i])), P.contrast(x, f)),
        "saturation": (
            lambda i, a: ImageEnhance.Color(a).enhance(float(factor[i])),
            P.blend(P.luma(x), x, f),
        ),
        "gray": (lambda i, a: a.convert("L").convert("RGB"), jnp.broadcast_to(P.luma(x), x.shape)),
        "solarize": (lambda i, a: ImageOps.solarize(a, 128), jnp.where(x >= 128, 255 - x, x)),
    }
    for name, (pil_fn, ours) in cases.items():
        np.testing.assert_array_equal(ours, _pil(images, pil_fn), err_msg=name)


def test_blend_rounds_like_pil_where_an_fma_would_not():
    """Every (degenerate, image) level pair, at factors (found by search) where rounding the
    product before the sum (C, PIL) and a fused multiply-add differ for some pairs."""
    level = np.arange(256, dtype=np.uint8)
    degenerate, image = np.broadcast_to(level[:, None], (256, 256)), np.broadcast_to(level, (256, 256))
    factors = np.float32([0.8175675868988037, 0.8421051502227783, 0.2311827689409256, 1.37, 1.9])
    expected = [
        np.asarray(Image.blend(Image.fromarray(degenerate), Image.fromarray(image), float(f)))
        for f in factors
    ]
    d, x = (
        jnp.asarray(np.broadcast_to(a[None, ..., None], (5, 256, 256, 1)), jnp.int32)
        for a in (degenerate, image)
    )
    np.testing.assert_array_equal(jax.jit(P.blend)(d, x, jnp.asarray(factors))[..., 0], np.stack(expected))


@pytest.mark.parametrize("hw", [(37, 45), (3, 2)])  # (3, 2): radius beyond the image (edge branch)
def test_blur_equals_pil(hw):
    rng = np.random.default_rng(1)
    images = _images(rng, 24, *hw)
    radius = np.concatenate([[0.1, 2.0, 0.0], rng.uniform(0.1, 2.0, 21)])
    width = P.blur_width(2.0)
    taps = jnp.asarray(np.stack([P.blur_kernel(float(r), width) for r in radius]))
    expected = _pil(images, lambda i, a: a.filter(ImageFilter.GaussianBlur(radius=float(radius[i]))))
    np.testing.assert_array_equal(P.gaussian_blur(jnp.asarray(images, jnp.int32), taps), expected)
    assert width == 5 and P.blur_width(4.0) == 9


def _recipes():
    """Each paper recipe at small sizes; NeCo's with jitter always on (all four ops)."""
    small = dict(global_size=40, local_size=20)
    return {
        "dino": dataclasses.replace(pipeline.crop_spec(dino_coco.get_config()), n_local=2, **small),
        "croc": dataclasses.replace(pipeline.crop_spec(croc_coco.get_config()), **small),
        "neco": dataclasses.replace(pipeline.crop_spec(neco_dinov2.get_config()), jitter_p=1.0, **small),
    }


# sha256 (first 16 hex digits) of `_outputs` made by the PIL path before device_photometric existed
PIL_PATH_HASHES = {"dino": "2d91ff9efc774764", "neco": "7e13352e667b49fd", "croc": "ee6077865aba4c0d"}


def _outputs(spec):
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3)).astype(np.uint8)
    transform = T.MultiCropTransform(spec)
    return [transform.random_map({"image": image}, np.random.default_rng(seed)) for seed in range(6)]


def test_flag_off_outputs_are_unchanged():
    for name, spec in _recipes().items():
        spec = dataclasses.replace(spec, n_local=0) if name == "dino" else spec
        digest = hashlib.sha256()
        for out in _outputs(spec):
            for key in sorted(out):
                digest.update(key.encode())
                digest.update(np.ascontiguousarray(out[key]).tobytes())
        assert digest.hexdigest()[:16] == PIL_PATH_HASHES[name], name


def test_device_path_equals_pil_path_on_the_same_draws():
    """Same seeds: identical geometry and draws; uint8 views that the device turns into the
    PIL path's normalised views; every draw (jitter on/off, op order, gray, blur, solarize)
    occurs across the recipes."""
    seen = {"jitter": set(), "gray": set(), "blur": set(), "solarize": set()}
    augment = jax.jit(P.apply_to_batch, static_argnums=(1, 2, 3))
    for name, spec in _recipes().items():
        host_outs = _outputs(spec)
        dev_outs = _outputs(dataclasses.replace(spec, device_photometric=True))
        kinds = [kind for kind in ("global", "local") if kind in host_outs[0]]
        params = {f"{kind}_{p}" for kind in kinds for p in P.PARAMS}
        for host_out, dev_out in zip(host_outs, dev_outs):
            assert set(dev_out) == set(host_out) | params
            for key in set(host_out) - set(kinds):
                np.testing.assert_array_equal(dev_out[key], host_out[key])
        batch = jax.tree.map(lambda *v: np.stack(v), *dev_outs)
        views = augment(batch, spec.mean, spec.std, spec.jitter[3] > 0)
        for kind in kinds:
            assert batch[kind].dtype == np.uint8
            expected = np.stack([out[kind] for out in host_outs])
            np.testing.assert_allclose(views[kind], expected, atol=1e-6, rtol=0, err_msg=f"{name} {kind}")
            seen["jitter"].update(map(tuple, batch[f"{kind}_jitter_order"].reshape(-1, 4)))
            seen["gray"].update(batch[f"{kind}_gray"].ravel())
            seen["blur"].update(batch[f"{kind}_blur_kernel"][..., 2].ravel() < 1 << 24)
            seen["solarize"].update(batch[f"{kind}_solarize"].ravel())
    assert (-1, -1, -1, -1) in seen["jitter"] and any(P.HUE in o for o in seen["jitter"])
    assert all(seen[k] == {False, True} for k in ("gray", "blur", "solarize"))
