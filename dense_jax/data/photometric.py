"""The multi-crop photometric augmentations, on the device from draws made on the host.

With ``config.data.device_photometric`` the host pipeline (`transforms.MultiCropTransform`)
only crops, resizes and flips; it ships each view as uint8 together with the random draws of
its colour jitter, grayscale, blur and solarize (`encode`), and the jitted step applies them
(`apply_to_batch`), followed by ToTensor + Normalize. The random stream on the host is the
same as for the PIL path, so both paths see the same crops and the same draws.

Every op re-implements Pillow's integer/float32 arithmetic (Pillow 13 ``libImaging``) and
rounds back to uint8 after each op, as PIL does:

- brightness / contrast / saturation: ``Image.blend(degenerate, image, f)``: float32
  ``d + f·(x − d)``, truncated and clipped (Blend.c); degenerate black, the mean luma
  ``int(mean + 0.5)``, or the pixel's luma;
- luma (grayscale, contrast, saturation): ``(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16``;
- hue: RGB → HSV (8-bit) → hue + ``int(f·255)`` mod 256 → RGB, torchvision's PIL hue shift
  (Convert.c's rgb2hsv/hsv2rgb in integers, with the hue of rgb2hsv read from a table that
  Pillow computes, `pil_hue_table`);
- Gaussian blur: Pillow's 3-pass extended box blur (BoxBlur.c) with its fixed-point weights,
  horizontal passes then vertical, edges replicated; the per-view weights come from the host
  (`blur_kernel`) so the device does integer arithmetic only;
- solarize at 128: ``x ↦ 255 − x`` where ``x ≥ 128``.

tests/data/test_photometric.py checks the uint8 results equal PIL's (no tolerance); the
only float arithmetic, the blend, is guarded against XLA fusing it into an FMA (`blend`;
the guard is what makes the CPU match, and is expected to hold on GPUs: run that test there).

Views are (..., H, W, 3) with per-view parameters of shape (...,); the ops are elementwise
per view apart from the contrast's per-view mean and the blur's row/column sums, so a batch
sharded over its leading axis needs no communication.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # torchvision ColorJitter's op indices
BLUR_PASSES = 3  # Pillow's GaussianBlur: three box passes per direction
_ONE = 1 << 24  # Pillow's box-blur fixed point
PARAMS = ("jitter_order", "jitter_factor", "hue_shift", "gray", "blur_kernel", "solarize")


@dataclasses.dataclass(frozen=True)
class ViewDraws:
    """The photometric draws of one view (`transforms.MultiCropTransform`), in PIL's terms.

    jitter_order: the ColorJitter op index applied at each of the 4 positions (its random
      permutation), −1 where the op is off (jitter not applied, or zero strength).
    factors: brightness, contrast, saturation factors and the hue shift factor in [−½, ½].
    blur_radius: PIL GaussianBlur radius, 0 for no blur.
    """

    jitter_order: tuple = (-1, -1, -1, -1)
    factors: tuple = (1.0, 1.0, 1.0, 0.0)
    gray: bool = False
    blur_radius: float = 0.0
    solarize: bool = False


# ---------------------------------------------------------------- host side (NumPy)


def box_blur_radius(radius: float) -> np.float32:
    """Pillow's ``_gaussian_blur_radius`` in float32: the fractional box radius whose
    `BLUR_PASSES` passes approximate a Gaussian of standard deviation `radius`."""
    r = np.float32(radius)
    sigma2 = r * r / np.float32(BLUR_PASSES)
    length = np.float32(math.sqrt(12.0 * float(sigma2) + 1.0))
    l = np.float32(math.floor((float(length) - 1.0) / 2.0))  # noqa: E741 (Pillow's name)
    a = (np.float32(2) * l + np.float32(1)) * (l * (l + np.float32(1)) - np.float32(3) * sigma2)
    a = a / (np.float32(6) * (sigma2 - (l + np.float32(1)) * (l + np.float32(1))))
    return l + a


def blur_width(max_radius: float) -> int:
    """Taps of `blur_kernel` for radii up to `max_radius`: 2·⌊box radius⌋ + 3."""
    return 2 * int(box_blur_radius(max_radius)) + 3


def blur_kernel(radius: float, width: int) -> np.ndarray:
    """uint32 (width,) taps of one box pass (BoxBlur.c): ``ww`` on the 2r + 1 centre taps,
    ``fw`` on the two next ones, in units of 2⁻²⁴; radius 0 gives the identity."""
    taps = np.zeros(width, np.uint32)
    centre = width // 2
    if radius == 0:
        taps[centre] = _ONE
        return taps
    box = box_blur_radius(radius)
    r = int(box)
    if 2 * r + 3 > width:
        raise ValueError(f"blur radius {radius} needs {2 * r + 3} taps, more than {width}")
    ww = int(np.float32(_ONE) / (box * np.float32(2) + np.float32(1)))
    fw = (_ONE - (2 * r + 1) * ww) // 2
    taps[centre - r : centre + r + 1] = ww
    taps[centre - r - 1] = taps[centre + r + 1] = fw
    return taps


def encode(draws: list[ViewDraws], width: int) -> dict[str, np.ndarray]:
    """Arrays of the draws of a kind's views, keyed by `PARAMS` (leading axis: view)."""
    return {
        "jitter_order": np.asarray([d.jitter_order for d in draws], np.int32),
        "jitter_factor": np.asarray([d.factors[:3] for d in draws], np.float32),
        "hue_shift": np.asarray([int(d.factors[3] * 255) for d in draws], np.int32),
        "gray": np.asarray([d.gray for d in draws], bool),
        "blur_kernel": np.stack([blur_kernel(d.blur_radius, width) for d in draws]),
        "solarize": np.asarray([d.solarize for d in draws], bool),
    }


# ---------------------------------------------------------------- device side (JAX)


def _per_view(p):
    return p[..., None, None, None]


def luma(x):
    """PIL's RGB → L (int32 (..., H, W, 3) → (..., H, W, 1))."""
    weighted = x[..., 0:1] * 19595 + x[..., 1:2] * 38470 + x[..., 2:3] * 7471 + 0x8000
    return weighted >> 16


def blend(degenerate, x, factor):
    """``Image.blend(degenerate, x, factor)``: trunc(float32 d + f·(x − d)) clipped to 0..255.

    C rounds the product to float32 before the sum; XLA would contract the two into one
    FMA (it does on CPU), which can move a sum lying on a truncation boundary. OR-ing the
    product's bits with d >> 8 (= 0, but not known to the compiler) keeps them apart."""
    product = _per_view(factor) * (x - degenerate).astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(product, jnp.int32) | (degenerate >> 8)
    mixed = degenerate.astype(jnp.float32) + jax.lax.bitcast_convert_type(bits, jnp.float32)
    return jnp.clip(jnp.floor(jnp.maximum(mixed, 0.0)), 0, 255).astype(jnp.int32)


def mean_luma(x):
    """ImageEnhance.Contrast's grey level: the view's mean luma rounded, int(mean + ½)."""
    lum = luma(x)
    count = lum.shape[-3] * lum.shape[-2]
    total = lum.sum(axis=(-3, -2, -1), keepdims=True)  # int32: fine below ~2000² pixels
    return (2 * total + count) // (2 * count)


def contrast(x, factor):
    """ImageEnhance.Contrast: blend with the mean luma."""
    return blend(mean_luma(x), x, factor)


@functools.cache
def pil_hue_table() -> np.ndarray:
    """uint8 (256, 1536): Pillow's 8-bit HSV hue of a colour with max − min = c and hue
    numerator n (`_hue_numerator`), read from Pillow itself. Convert.c's float/double hue
    is floor(255·n / 6c) except where that is an integer and its float arithmetic lands
    just below (0.3 % of colours); a table is exact on every platform."""
    c = np.repeat(np.arange(256), 6 * 256)
    n = np.tile(np.arange(6 * 256), 256)
    valid = (c > 0) & (n < 6 * c)
    c, n = c[valid], n[valid]
    # a colour with min 0, max c and hue numerator n (Pillow's r > g > b branch priority)
    r = np.select([n <= c, n <= 2 * c, n <= 4 * c, n < 5 * c], [c, 2 * c - n, 0, n - 4 * c], c)
    g = np.select([n <= c, n <= 3 * c, n <= 4 * c], [n, c, 4 * c - n], 0)
    b = np.select([n <= 2 * c, n <= 3 * c, n < 5 * c], [0, n - 2 * c, c], 6 * c - n)
    rgb = np.stack([r, g, b], -1).astype(np.uint8)[None]
    table = np.zeros((256, 6 * 256), np.uint8)
    table[c, n] = np.asarray(Image.fromarray(rgb).convert("HSV"))[0, :, 0]
    return table


def _hue_numerator(x, maxc, cr):
    """6·c·hue in [0, 6c) as an integer (colorsys's branches: r, then g, then b is max)."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    n = jnp.where(r == maxc, g - b, jnp.where(g == maxc, 2 * cr + b - r, 4 * cr + r - g))
    return n % jnp.maximum(6 * cr, 1)


def _rgb_to_hsv(x):
    """Convert.c ``rgb2hsv_row`` exactly: hue from `pil_hue_table`, S = ⌊255 c / max⌋, V = max."""
    maxc, minc = x.max(axis=-1), x.min(axis=-1)
    cr = maxc - minc
    index = cr * 6 * 256 + _hue_numerator(x, maxc, cr)
    h = jnp.take(jnp.asarray(pil_hue_table().reshape(-1)), index, mode="clip").astype(jnp.int32)
    return h, (255 * cr) // jnp.maximum(maxc, 1), maxc


def _hsv_to_rgb(h, s, v):
    """Convert.c ``hsv2rgb`` in integers: with sector i = ⌊6h/255⌋, m = 6h − 255 i,
    p = round(v(255 − s)/255), q = round(v(255² − s m)/255²), t = round(v(255² − s(255 − m))/255²),
    which equals Pillow's float arithmetic on all 2²⁴ inputs (tests/data/test_photometric.py)."""
    sector = (6 * h) // 255
    m = 6 * h - 255 * sector
    d = 255 * 255
    p = (2 * v * (255 - s) + 255) // 510
    q = (2 * v * (d - s * m) + d) // (2 * d)
    t = (2 * v * (d - s * (255 - m)) + d) // (2 * d)
    table = jnp.stack(
        [
            jnp.stack([v, t, p], -1),
            jnp.stack([q, v, p], -1),
            jnp.stack([p, v, t], -1),
            jnp.stack([p, q, v], -1),
            jnp.stack([t, p, v], -1),
            jnp.stack([v, p, q], -1),
        ]
    )
    rgb = jnp.take_along_axis(table, (sector % 6)[None, ..., None], axis=0)[0]
    return jnp.where((s == 0)[..., None], v[..., None], rgb)


def hue(x, shift):
    """torchvision's PIL hue: HSV hue + `shift` (= int(f·255)) mod 256."""
    h, s, v = _rgb_to_hsv(x)
    return _hsv_to_rgb((h + shift[..., None, None]) % 256, s, v)


def _box_pass(x, taps, axis: int):
    """One fixed-point box pass along `axis` (−3 rows, −2 columns), edges replicated."""
    width = taps.shape[-1]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (width // 2, width // 2)
    padded = jnp.pad(x.astype(jnp.uint32), pad, mode="edge")
    size = x.shape[axis]
    acc = jnp.zeros(x.shape, jnp.uint32)
    for k in range(width):
        acc = acc + _per_view(taps[..., k]) * jax.lax.slice_in_dim(padded, k, k + size, axis=axis)
    return ((acc + (1 << 23)) >> 24).astype(jnp.int32)


def gaussian_blur(x, taps):
    """PIL GaussianBlur: `BLUR_PASSES` box passes along rows, then along columns."""
    for axis in (-2, -3):
        x = jax.lax.fori_loop(0, BLUR_PASSES, lambda _, y, axis=axis: _box_pass(y, taps, axis), x)
    return x


def _jitter_position(x, op, factor, hue_shift, use_hue: bool):
    """The ColorJitter op `op` (per view; −1: none) applied to `x`. Brightness, contrast and
    saturation are one blend with a per-view degenerate image and factor (factor 1 leaves
    `x` exactly as it is)."""
    op = _per_view(op)
    degenerate = jnp.where(op == BRIGHTNESS, 0, jnp.where(op == CONTRAST, mean_luma(x), luma(x)))
    f = jnp.ones_like(factor[..., 0])
    for index in (BRIGHTNESS, CONTRAST, SATURATION):
        f = jnp.where(op[..., 0, 0, 0] == index, factor[..., index], f)
    out = blend(degenerate, x, f)
    return jnp.where(op == HUE, hue(x, hue_shift), out) if use_hue else out


def augment(views, params: dict, use_hue: bool = True):
    """uint8 views (..., H, W, 3) → int32 0..255 after ColorJitter (in each view's op order),
    grayscale, blur and solarize, by the per-view `params` of `encode` (leading dims (...)).
    `use_hue=False` leaves the hue op out of the graph (recipes without hue jitter)."""

    def position(k, x):
        op = jax.lax.dynamic_index_in_dim(params["jitter_order"], k, axis=-1, keepdims=False)
        return _jitter_position(x, op, params["jitter_factor"], params["hue_shift"], use_hue)

    x = jax.lax.fori_loop(0, 4, position, views.astype(jnp.int32))
    x = jnp.where(_per_view(params["gray"]), jnp.broadcast_to(luma(x), x.shape), x)
    x = gaussian_blur(x, params["blur_kernel"])
    return jnp.where(_per_view(params["solarize"]) & (x >= 128), 255 - x, x)


def normalize(x, mean, std):
    """0..255 values → float32 (x / 255 − mean) / std, as `transforms.normalize`."""
    return (x.astype(jnp.float32) / 255.0 - jnp.float32(mean)) / jnp.float32(std)


def apply_to_batch(batch: dict, mean, std, use_hue: bool = True) -> dict:
    """The batch with each uint8 ``<kind>`` view stack that has ``<kind>_<param>`` draws
    augmented and normalised, and the draws removed (inside the jitted step)."""
    out = dict(batch)
    for kind in ("global", "local"):
        if f"{kind}_jitter_order" not in batch:
            continue
        params = {name: out.pop(f"{kind}_{name}") for name in PARAMS}
        out[kind] = normalize(augment(batch[kind], params, use_hue), mean, std)
    return out
