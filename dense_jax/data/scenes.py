"""Built-in procedural "scenes" dataset: textured shapes on textured backgrounds.

Every image is drawn from nothing but its (seed, split, index, size), so demos, notebooks
and CI can train and evaluate every method without downloading anything.

A scene is one or two "stuff" background regions with "thing" objects on top. Two styles:

- ``"learnable"`` (default): like real photos, a class has typical colours (a hue, saturation
  and brightness range per class that overlaps its neighbours'), a texture whose period is
  about one 16-pixel patch at 128², a shape, and 1-4 objects per scene large enough to span
  several tokens. Colour alone is an unreliable cue (overlapping priors, colour jitter in the
  SSL recipes); colour, texture and shape together identify a class.
- ``"hard"``: class-blind colours, the same two-colour distribution for every class, textures
  finer than a patch and 2-6 smaller objects: only shape and texture carry the class. A
  CPU-minutes SSL run learns nothing here (benchmarks/scenes_learnability.md).

Objects get a random scale, aspect, rotation and position; their centres are kept apart so
that objects overlap only partly.

Geometry and textures live in normalised coordinates (u = x / W, v = y / H), so one index
gives the same scene at every size, like resizing it. Only the faint pixel noise and the
ignore band (``ignore_border`` pixels wide along every region boundary, as in VOC) are
per pixel. Rendering is vectorised numpy over each object's bounding box.

Usage::

    render_scene(3, "val")                      # {"image", "mask", "index"}
    grain.MapDataset.source(ScenesSource("train"))
    python -m dense_jax.data.scenes --out benchmarks/scenes_grid.png   # docs grid + timings
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import time

import numpy as np
from PIL import Image, ImageDraw

from dense_jax.data.palette import PALETTE, colourise

CLASS_NAMES = (
    # Things: a distinct shape with a distinct texture.
    "striped_disc",  # 0: disc, straight square-wave stripes
    "checkered_square",  # 1: square, checkerboard
    "dotted_triangle",  # 2: triangle, lattice of dots
    "ringed_star",  # 3: five-pointed star, concentric rings
    "speckled_cross",  # 4: plus sign, random fine blocks
    "zigzag_crescent",  # 5: crescent, zigzag stripes
    # Stuff: background textures.
    "gradient",  # 6: smooth two-colour gradient with low-frequency swirls
    "grid",  # 7: thin lines on a plain ground
    "waves",  # 8: smooth wavy sinusoidal bands
)
NUM_CLASSES = len(CLASS_NAMES)
THING_CLASSES = (0, 1, 2, 3, 4, 5)
STUFF_CLASSES = (6, 7, 8)
IGNORE_INDEX = 255
SPLITS = ("train", "val")
STYLES = ("learnable", "hard")
_OBJECTS = {"learnable": (1, 4), "hard": (2, 6)}  # default (min, max) objects per scene

# Learnable style: each class's colour prior as (hue centre, saturation range), hue in turns.
# Thing hues are 60° apart with a 20° spread, so neighbours overlap; stuff is desaturated.
_HUE_SPREAD = 0.055
_ATYPICAL = {True: 0.2, False: 0.1}  # chance of a uniformly random hue: things, stuff
_CLASS_COLOUR = {
    0: (0.00, (0.55, 0.9)),  # reddish
    1: (1 / 6, (0.55, 0.9)),  # yellowish
    2: (2 / 6, (0.55, 0.9)),  # greenish
    3: (3 / 6, (0.55, 0.9)),  # cyan-ish
    4: (4 / 6, (0.55, 0.9)),  # bluish
    5: (5 / 6, (0.55, 0.9)),  # purplish
    6: (0.58, (0.1, 0.45)),  # sky: pale blue
    7: (0.27, (0.2, 0.55)),  # grass: muted green
    8: (0.09, (0.2, 0.55)),  # sand: muted orange
}

_NOISE_LEVELS = 8  # +- uniform pixel noise on the 0..255 pattern level
_NOISE_MARGIN = 64  # the noise field is cut at a random offset in [0, margin)


@dataclasses.dataclass(frozen=True)
class ScenesConfig:
    """How scenes are drawn. ``ignore_border``: width in pixels of the 255 band."""

    image_size: tuple[int, int] = (224, 224)  # (H, W)
    min_objects: int | None = None  # None: the style's default (learnable 1-4, hard 2-6)
    max_objects: int | None = None
    seed: int = 0
    ignore_border: int = 1
    style: str = "learnable"  # "learnable" | "hard" (class-blind colours, see the module doc)

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"scenes style must be one of {STYLES}, got {self.style!r}")
        lo, hi = _OBJECTS[self.style]
        if self.min_objects is None:
            object.__setattr__(self, "min_objects", lo)
        if self.max_objects is None:
            object.__setattr__(self, "max_objects", hi)
        if not 0 <= self.min_objects <= self.max_objects <= 64:
            raise ValueError(f"need 0 <= min_objects <= max_objects <= 64, got {self}")
        if min(self.image_size) < 1 or self.ignore_border < 0:
            raise ValueError(f"bad image_size or ignore_border in {self}")


@dataclasses.dataclass(frozen=True)
class _Region:
    """One textured region: class, texture parameters and its two colours."""

    cls: int
    period: float  # texture period in normalised units
    angle: float  # texture orientation (stuff) or object rotation (things)
    extra: tuple[float, ...]  # texture-specific uniforms in [0, 1)
    colours: np.ndarray  # (2, 3) float32


@dataclasses.dataclass(frozen=True)
class _Object:
    region: _Region
    centre: tuple[float, float]  # (u, v)
    radii: tuple[float, float]  # local unit disc -> normalised units, per local axis


# ---------------------------------------------------------------------------- layout


def _blind_colours(rng: np.random.Generator) -> np.ndarray:
    """Hard style: two colours with clear contrast, exchangeable, one distribution for all classes."""
    pairs = rng.uniform(0.0, 255.0, size=(8, 2, 3)).astype(np.float32)
    ok = np.square(pairs[:, 0] - pairs[:, 1]).sum(-1) > 90.0**2
    return pairs[int(np.argmax(ok))]  # 8 tries fail with probability ~1e-6; then any pair


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (h in turns, s and v in [0, 1]) as float RGB in [0, 255]."""
    k = (np.array([5.0, 3.0, 1.0]) + 6.0 * (h % 1.0)) % 6.0
    return (255.0 * v * (1.0 - s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))).astype(np.float32)


def _class_colours(rng: np.random.Generator, cls: int) -> np.ndarray:
    """Learnable style: a light and a dark shade drawn from the class's colour prior."""
    hue, (s_lo, s_hi) = _CLASS_COLOUR[cls]
    atypical = rng.random() < _ATYPICAL[cls in THING_CLASSES]
    h = rng.random() if atypical else hue + _HUE_SPREAD * rng.standard_normal()
    s, v, dv, dh = rng.uniform((s_lo, 0.6, 0.25, -0.03), (s_hi, 1.0, 0.45, 0.03)).tolist()
    return np.stack([_hsv_to_rgb(h, s, v), _hsv_to_rgb(h + dh, s, v - dv)])


def _region(rng: np.random.Generator, cls: int, style: str) -> _Region:
    p, angle, *extra = rng.random(6).tolist()
    if style == "hard":
        period = 0.04 + 0.03 * p if cls in THING_CLASSES else 0.05 + 0.04 * p
        return _Region(cls, period, 2 * math.pi * angle, tuple(extra), _blind_colours(rng))
    period = 0.08 + 0.05 * p  # about one patch of a 16-pixel ViT at 128²
    return _Region(cls, period, 2 * math.pi * angle, tuple(extra), _class_colours(rng, cls))


def _layout(rng: np.random.Generator, config: ScenesConfig):
    """Background regions and objects (back to front). Independent of the image size."""
    style = config.style
    stuff = rng.choice(STUFF_CLASSES, size=2, replace=False)
    background = [_region(rng, int(stuff[0]), style)]
    split_line = None
    if rng.random() < 0.6:  # a second stuff region behind a wavy line
        background.append(_region(rng, int(stuff[1]), style))
        split_line = tuple(rng.random(5).tolist())
    scale_lo, scale_range = (0.12, 0.15) if style == "hard" else (0.18, 0.14)

    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    objects: list[_Object] = []
    for _ in range(n):
        region = _region(rng, THING_CLASSES[int(rng.integers(len(THING_CLASSES)))], style)
        scale, aspect = rng.random(2).tolist()
        scale, aspect = scale_lo + scale_range * scale, math.exp(0.5 * aspect - 0.25)
        radii = (scale * aspect, scale / aspect)
        reach = max(radii)
        for cu, cv in rng.uniform(0.08, 0.92, size=(25, 2)).tolist():
            # Keep every centre outside the other objects (overlap only partly).
            if all(
                math.hypot(cu - o.centre[0], cv - o.centre[1]) >= 0.85 * max(reach, *o.radii) for o in objects
            ):
                break
        else:
            if len(objects) >= config.min_objects:
                continue  # no room left: drop it
        objects.append(_Object(region, (cu, cv), radii))
    return background, split_line, objects


# ---------------------------------------------------------------------------- textures


def _frac(x):
    return x - np.floor(x)


def _thing_texture(cls: int, x, y, r: _Region):
    """Binary pattern (bool) in object-local coordinates x, y (normalised units)."""
    p = r.period
    if cls == 0:  # stripes
        return _frac(x / p) < 0.5
    if cls == 1:  # checker
        return ((np.floor(x / p).astype(np.int32) + np.floor(y / p).astype(np.int32)) & 1) == 1
    if cls == 2:  # dots
        fx, fy = _frac(x / p) - 0.5, _frac(y / p) - 0.5
        return fx * fx + fy * fy < 0.1
    if cls == 3:  # rings around the object centre
        return _frac(np.sqrt(x * x + y * y) / p) < 0.5
    if cls == 4:  # speckle: cells of p/3 switched on by an integer hash
        q = p / 3
        ix, iy = np.floor(x / q).astype(np.int64), np.floor(y / q).astype(np.int64)
        h = ix * 374761393 + iy * 668265263 + int(r.extra[0] * 2**30)
        h = (h ^ (h >> 13)) * 1274126177
        return ((h ^ (h >> 16)) >> 5 & 1) == 1
    # zigzag: stripes along x, shifted by a triangle wave in y
    tri = np.abs(_frac(y / (0.9 * p)) - 0.5)
    return _frac((x + 1.6 * p * tri) / p) < 0.5


def _thing_shape(cls: int, x, y):
    """Inside test for a shape inscribed in the unit disc (local, scaled coordinates)."""
    if cls == 0:  # disc
        return x * x + y * y < 1.0
    if cls == 1:  # square
        return np.maximum(np.abs(x), np.abs(y)) < 0.75
    if cls == 2:  # equilateral triangle, circumradius 1
        s = math.sqrt(3.0) / 2
        return (y < 0.5) & (s * x - 0.5 * y < 0.5) & (-s * x - 0.5 * y < 0.5)
    if cls == 3:  # star: radius zig-zags between 0.42 and 1 over five points
        phase = _frac(np.arctan2(y, x) * (5 / (2 * math.pi)))
        edge = 0.42 + 1.16 * np.abs(phase - 0.5)
        return x * x + y * y < edge * edge
    if cls == 4:  # plus sign
        ax, ay = np.abs(x), np.abs(y)
        return ((ax < 0.33) & (ay < 0.95)) | ((ay < 0.33) & (ax < 0.95))
    # crescent: unit disc minus a shifted disc
    return (x * x + y * y < 1.0) & ((x - 0.5) ** 2 + y * y > 0.6)


def _sin_plane(u, v, fu: float, fv: float, phase: float):
    """sin(2 pi (fu u + fv v) + phase) over the grid, from 1-D sines (sin(x + y) expanded)."""
    x, y = (2 * math.pi * fu) * u, (2 * math.pi * fv) * v + phase
    return np.sin(x) * np.cos(y) + np.cos(x) * np.sin(y)


def _stuff_texture(cls: int, u, v, r: _Region):
    """Pattern in [0, 1] (float or bool) over normalised image coordinates u, v."""
    c, s = math.cos(r.angle), math.sin(r.angle)  # axes a = (c, s), b = (-s, c)
    e = r.extra
    if cls == 6:  # gradient: a ramp along a plus one slow swirl
        f = 0.6 + e[0]
        swirl = _sin_plane(u, v, f * (0.3 * c - s), f * (c + 0.3 * s), 6.3 * e[1])
        ramp = 0.7 * c * (u - 0.5) + (0.5 + 0.7 * s * (v - 0.5))
        return np.clip(ramp + 0.25 * swirl, 0.0, 1.0)
    if cls == 7:  # grid of thin lines
        width = 0.12 + 0.08 * e[0]
        p = r.period
        along_a, along_b = u * (c / p) + v * (s / p), v * (c / p) - u * (s / p)
        return (_frac(along_a) < width) | (_frac(along_b) < width)
    # waves: smooth sinusoid along a, its phase bent by a slower sinusoid along b
    f = 1.0 / (0.25 + 0.2 * e[1])
    bend = (0.3 + 0.5 * e[0]) * _sin_plane(u, v, -s * f, c * f, 6.3 * e[2])
    bend += u * (c / r.period) + v * (s / r.period)
    return 0.5 + 0.5 * np.sin((2 * math.pi) * bend)


# ---------------------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=16)
def _grid(h: int, w: int):
    """Normalised pixel-centre coordinates u (1, W) and v (H, 1)."""
    u = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]
    v = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    u.flags.writeable = v.flags.writeable = False
    return u, v


@functools.lru_cache(maxsize=8)
def _noise(h: int, w: int) -> np.ndarray:
    """A fixed noise field a bit larger than the image; scenes cut it at random offsets."""
    rng = np.random.default_rng(1234)
    shape = (h + _NOISE_MARGIN, w + _NOISE_MARGIN)
    noise = rng.uniform(-_NOISE_LEVELS, _NOISE_LEVELS, shape).astype(np.float32)
    noise.flags.writeable = False
    return noise


def _colour_table(regions: list[_Region]) -> np.ndarray:
    """(len(regions) * 256, 3) uint8: row 256 * r + level is region r's colour at that level.

    Levels _NOISE_LEVELS and 255 - _NOISE_LEVELS are the region's two colours exactly; the
    margins either side hold the pattern noise.
    """
    colours = np.stack([r.colours for r in regions])  # (R, 2, 3)
    t = (np.arange(256, dtype=np.float32) - _NOISE_LEVELS) / (255 - 2 * _NOISE_LEVELS)
    table = colours[:, None, 0] + t[None, :, None] * (colours[:, None, 1] - colours[:, None, 0])
    return np.clip(np.rint(table), 0, 255).astype(np.uint8).reshape(-1, 3)


def _ignore_band(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels within a ``width``-pixel band straddling every label change."""
    band = np.zeros(labels.shape, bool)
    after, before = (width + 1) // 2, width // 2  # offsets to look ahead / behind
    for axis in (0, 1):
        n = labels.shape[axis]
        for k in range(1, max(after, before) + 1):
            if k >= n:
                break
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(0, n - k), slice(k, n)
            diff = labels[tuple(lo)] != labels[tuple(hi)]
            if k <= after:
                band[tuple(lo)] |= diff
            if k <= before:
                band[tuple(hi)] |= diff
    return band


def _rng(index: int, split: str, seed: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def _render(index: int, split: str, config: ScenesConfig):
    """(image uint8 (H,W,3), mask uint8 (H,W), instances uint8 (H,W): 0 = stuff, k = object k)."""
    if index < 0:
        raise IndexError(f"scene index must be >= 0, got {index}")
    h, w = config.image_size
    rng = _rng(index, split, config.seed)
    background, split_line, objects = _layout(rng, config)
    noise_offset = rng.integers(0, _NOISE_MARGIN, size=2)
    u, v = _grid(h, w)

    # Paint a pattern level t in [0, 1] and a region id per pixel; colour them at the end.
    first = background[0]
    t = np.broadcast_to(_stuff_texture(first.cls, u, v, first), (h, w)).astype(np.float32)
    region = np.zeros((h, w), np.uint8)
    if split_line is not None:
        second, e = background[1], split_line
        c, s = math.cos(2 * math.pi * e[0]), math.sin(2 * math.pi * e[0])
        f = 1 + 2 * e[3]  # wobble along the line (-s, c) through the centre, shifted off it
        phase = 6.3 * e[4] + math.pi * f * (s - c)
        wobble = (0.06 * e[2]) * _sin_plane(u, v, -s * f, c * f, phase)
        inside = wobble + c * (u - 0.5) + (s * (v - 0.5) - 0.5 * (e[1] - 0.5)) > 0
        np.copyto(t, _stuff_texture(second.cls, u, v, second), where=inside)
        region[inside] = 1

    for k, obj in enumerate(objects, start=len(background)):
        cu, cv = obj.centre
        reach = max(obj.radii)
        r0, r1 = max(0, int((cv - reach) * h)), min(h, int(np.ceil((cv + reach) * h)) + 1)
        c0, c1 = max(0, int((cu - reach) * w)), min(w, int(np.ceil((cu + reach) * w)) + 1)
        du, dv = u[:, c0:c1] - cu, v[r0:r1] - cv
        ca, sa = math.cos(obj.region.angle), math.sin(obj.region.angle)
        x, y = du * ca + dv * sa, dv * ca - du * sa  # object-local, normalised units
        cls = obj.region.cls
        inside = _thing_shape(cls, x / obj.radii[0], y / obj.radii[1])
        np.copyto(t[r0:r1, c0:c1], _thing_texture(cls, x, y, obj.region), where=inside)
        region[r0:r1, c0:c1][inside] = k

    oy, ox = noise_offset
    level = t * np.float32(255 - 2 * _NOISE_LEVELS) + np.float32(_NOISE_LEVELS)
    level += _noise(h, w)[oy : oy + h, ox : ox + w]
    regions = background + [o.region for o in objects]
    index_map = (region.astype(np.int32) << 8) | level.astype(np.int32)  # level in [0, 255]
    image = np.take(_colour_table(regions), index_map, axis=0)

    labels = np.array([r.cls for r in regions], np.uint8)[region]
    if config.ignore_border > 0:
        labels[_ignore_band(labels, config.ignore_border)] = IGNORE_INDEX
    instances = np.maximum(region, len(background) - 1) - (len(background) - 1)
    return image, labels, instances


def render_scene(index: int, split: str = "train", config: ScenesConfig = ScenesConfig()) -> dict:
    """Scene ``index`` of ``split``: {"image": uint8 (H,W,3), "mask": uint8 (H,W), "index"}.

    A pure function of (config.seed, split, index, config.image_size).
    """
    image, mask, _ = _render(int(index), split, config)
    return {"image": image, "mask": mask, "index": int(index)}


class ScenesSource:
    """grain random-access source of ``num_examples`` scenes of one split."""

    def __init__(
        self,
        split: str = "train",
        num_examples: int | None = None,
        config: ScenesConfig = ScenesConfig(),
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        if num_examples is None:
            num_examples = {"train": 10_000, "val": 500}[split]
        self.num_examples = num_examples
        self.config = config

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index) -> dict:
        index = int(index)
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range for {len(self)} scenes")
        return render_scene(index, self.split, self.config)

    def __repr__(self) -> str:
        return f"ScenesSource({self.split!r}, {self.num_examples}, {self.config})"


# ---------------------------------------------------------------------------- docs


def render_grid(
    path: str,
    rows: int = 4,
    cols: int = 4,
    size: tuple[int, int] = (160, 160),
    split: str = "train",
    seed: int = 0,
) -> None:
    """Save a PNG of rows x cols (image | colourised mask) pairs with a class legend (the
    shared VOC colour map, ignore white; swatches outlined so class 0's black shows)."""
    h, w = size
    config = ScenesConfig(image_size=size, seed=seed)
    gap, legend_h = 4, 22
    width = cols * (2 * w + 3 * gap)
    canvas = Image.new("RGB", (width, rows * (h + gap) + gap + legend_h), "black")
    for i in range(rows * cols):
        scene = render_scene(i, split, config)
        x = (i % cols) * (2 * w + 3 * gap) + gap
        y = (i // cols) * (h + gap) + gap
        canvas.paste(Image.fromarray(scene["image"]), (x, y))
        canvas.paste(Image.fromarray(colourise(scene["mask"])), (x + w + gap, y))
    draw = ImageDraw.Draw(canvas)
    x, y = gap, rows * (h + gap) + gap + 4
    ids = list(range(NUM_CLASSES)) + [IGNORE_INDEX]
    for name, colour in zip(CLASS_NAMES + ("ignore",), PALETTE[ids].tolist()):
        draw.rectangle([x, y, x + 12, y + 12], fill=tuple(colour), outline="white")
        draw.text((x + 16, y), name, fill="white")
        x += 22 + int(draw.textlength(name))
    canvas.save(path)


def time_render(size: tuple[int, int], n: int = 200, split: str = "train") -> tuple[float, float]:
    """(wall, process CPU) milliseconds per scene at ``size``, mean over scenes 0..n-1."""
    config = ScenesConfig(image_size=size)
    render_scene(0, split, config)  # warm the coordinate and noise caches
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        render_scene(i, split, config)
    return (time.perf_counter() - wall) / n * 1e3, (time.process_time() - cpu) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/scenes_grid.png")
    parser.add_argument("--n", type=int, default=200, help="scenes per timing")
    args = parser.parse_args()
    render_grid(args.out)
    print(f"wrote {args.out}")
    for size in ((224, 224), (448, 448)):
        wall, cpu = time_render(size, args.n)
        print(f"render {size[0]}x{size[1]}: {wall:.2f} ms/image wall, {cpu:.2f} ms/image CPU")


if __name__ == "__main__":
    main()
