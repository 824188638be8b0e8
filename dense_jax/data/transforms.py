"""Multi-crop augmentation with crop geometry in original-image pixels, and eval transforms.

PIL/NumPy, run on the host inside grain (jax-practices §6). Every view records its crop box
(x1, y1, x2, y2) and horizontal flip in the original image's pixel frame, from which
`patch_centers` gives CrOC/CrIBo token positions (croc.md §2, cribo.md §2) and
`intersection_boxes` gives NeCo's `gc`/`all` ROI boxes (neco.md §1). All randomness comes
from the `np.random.Generator` that grain hands to `random_map`.
"""

from __future__ import annotations

import dataclasses
import math

import grain
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from dense_jax.data import photometric

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def sample_crop_box(rng: np.random.Generator, image_hw, scale, ratio=(3 / 4, 4 / 3)):
    """torchvision `RandomResizedCrop.get_params` (croc.md §2 step 1) → (x1, y1, x2, y2) ints.

    Up to 10 tries of area ~ U(scale)·H·W, log-uniform aspect w/h in `ratio`,
    w = round(√(area·aspect)), h = round(√(area/aspect)), accepted if 0 < w ≤ W and 0 < h ≤ H,
    then top ~ U{0..H−h}, left ~ U{0..W−w}; otherwise a centre crop with the aspect clamped
    to `ratio`.
    """
    height, width = image_hw
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def crop_resize_flip(
    img: Image.Image, box, size: int, resample, rng=None, flip_p: float = 0.0, mask: Image.Image | None = None
):
    """The geometric step of every augmented view (multi-crop, linear-probe and Hummingbird
    memory items): crop `img` and `mask` to `box` (x1, y1, x2, y2), resize to size² (`img` with
    `resample`, `mask` nearest), flip both when ``rng.random() < flip_p`` (no draw when `rng` is
    None). Returns (view, mask view or None, flipped)."""
    view = img.crop(box).resize((size, size), resample)
    if mask is not None:
        mask = mask.crop(box).resize((size, size), Image.Resampling.NEAREST)
    flip = rng is not None and bool(rng.random() < flip_p)
    if flip:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mask is not None else None
    return view, mask, flip


def normalize(img, mean, std) -> np.ndarray:
    """uint8 image (PIL or array) -> float32 (x / 255 − mean) / std (ToTensor + Normalize)."""
    return (np.asarray(img, np.float32) / 255.0 - np.float32(mean)) / np.float32(std)


def _intersection_area(box, others):
    """Area of box ∩ each of `others` (N, 4); 0 where they do not overlap."""
    others = np.asarray(others, np.float64).reshape(-1, 4)
    wh = np.minimum(box[2:], others[:, 2:]) - np.maximum(box[:2], others[:, :2])
    return np.prod(np.clip(wh, 0.0, None), axis=1)


def patch_centers(box, flip, grid):
    """Centre (x, y) of each patch in original-image pixel-index coordinates (croc.md §2).

    box: (..., 4) (x1, y1, x2, y2); flip: (...,) bool; grid: patches per side, int or (gh, gw).
    x(p) = x1 + (p + ½)·w/gw − ½ and y(q) = y1 + (q + ½)·h/gh − ½, with p → gw−1−p for a
    flipped view; returns (..., gh·gw, 2) float32 in row-major token order.
    """
    gh, gw = (int(grid), int(grid)) if np.ndim(grid) == 0 else grid
    box = np.asarray(box, np.float64)
    flip = np.asarray(flip, bool)
    w = (box[..., 2] - box[..., 0])[..., None]
    h = (box[..., 3] - box[..., 1])[..., None]
    cols = np.arange(gw, dtype=np.float64)
    cols = np.where(flip[..., None], gw - 1 - cols, cols)
    xs = box[..., 0:1] + (cols + 0.5) * w / gw - 0.5  # (..., gw)
    ys = box[..., 1:2] + (np.arange(gh) + 0.5) * h / gh - 0.5  # (..., gh)
    xx = np.broadcast_to(xs[..., None, :], xs.shape[:-1] + (gh, gw))
    yy = np.broadcast_to(ys[..., :, None], ys.shape[:-1] + (gh, gw))
    return np.stack([xx, yy], axis=-1).reshape(xs.shape[:-1] + (gh * gw, 2)).astype(np.float32)


def intersection_boxes(boxes_a, sizes_a, boxes_b, sizes_b):
    """NeCo's pairwise box records (neco.md §1 "Box records"), for unflipped square views.

    boxes_*: (A, 4), (B, 4) crop boxes in original pixels; sizes_*: output side of each view
    (scalar or per box). With I = box_a ∩ box_b, returns
      in_a (A, B, 4): I in view a's resized pixel frame, (I − (x1_a, y1_a))·S_a/(w_a, h_a);
      in_b (B, A, 4): the same region in view b's frame.
    For NeCo, `gc, all = intersection_boxes(globals, S_g, all_views, S_v)`. Every record lies
    inside its view's frame [0, S]²: disjoint pairs give a zero-area box, clamped into the frame
    (ROI-align then returns zeros).
    """
    a = np.asarray(boxes_a, np.float64)
    b = np.asarray(boxes_b, np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (A, B, 2)
    rb = np.maximum(np.minimum(a[:, None, 2:], b[None, :, 2:]), lt)
    inter = np.concatenate([lt, rb], axis=-1)  # (A, B, 4)

    def to_frame(boxes, sizes, region):
        sizes = np.broadcast_to(np.asarray(sizes, np.float64), boxes.shape[:1])
        origin = np.tile(boxes[:, None, :2], (1, 1, 2))
        extent = np.tile(boxes[:, None, 2:] - boxes[:, None, :2], (1, 1, 2))
        frame = (region - origin) * sizes[:, None, None] / extent
        return np.clip(frame, 0.0, sizes[:, None, None]).astype(np.float32)

    return to_frame(a, sizes_a, inter), to_frame(b, sizes_b, inter.transpose(1, 0, 2))


@dataclasses.dataclass(frozen=True)
class MultiCropSpec:
    """Per-image multi-crop recipe. Views are drawn in order globals, then locals.

    Per view: crop (`sample_crop_box`, optional NeCo overlap constraint) → resize to size²
    (`interpolation`, PIL) → horizontal flip (`flip_p`) → ColorJitter(`jitter`) with
    probability `jitter_p` (random op order) → grayscale (`gray_p`) → PIL Gaussian blur,
    radius ~ U(`blur_radius`) (`global_blur_p[i]` / `local_blur_p`) → solarize at 128
    (`global_solarize_p[i]`) → ToTensor + mean/std.

    min_overlap: NeCo's constraint (neco.md §1): each view after the first must overlap every
      earlier global by more than int(min_overlap·H·W) pixels, doubled between globals.
      Redrawn at most `max_tries` times, then the most-overlapping candidate is kept (the
      reference loops forever; neco.md §8).
    patch_size: when set, emit `<kind>_pos` patch centres on a (size // patch_size)² grid.
    pair_boxes: emit NeCo's `gc` (n_g, n, 4) and `all` (n, n_g, 4) records (needs no flip).
    device_photometric: stop after the flip; ship uint8 views and their photometric draws
      (`photometric.encode`) for the step to apply on the device (same random stream).
    """

    n_global: int = 2
    global_size: int = 224
    global_scale: tuple = (0.25, 1.0)
    n_local: int = 0
    local_size: int = 96
    local_scale: tuple = (0.05, 0.4)
    ratio: tuple = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"
    flip_p: float = 0.5
    jitter: tuple = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_radius: tuple = (0.1, 2.0)
    global_blur_p: tuple = (1.0, 0.1)
    local_blur_p: float = 0.5
    global_solarize_p: tuple = (0.0, 0.2)
    min_overlap: float | None = None
    max_tries: int = 100
    patch_size: int | None = None
    pair_boxes: bool = False
    device_photometric: bool = False
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def __post_init__(self):
        if len(self.global_blur_p) != self.n_global or len(self.global_solarize_p) != self.n_global:
            raise ValueError("global_blur_p and global_solarize_p need one entry per global crop")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}")
        if self.pair_boxes and self.flip_p > 0:
            raise ValueError("pair_boxes records assume unflipped views (neco.md §1): set flip_p=0")


def _adjust_hue(img: Image.Image, factor: float) -> Image.Image:
    """torchvision's PIL hue shift: add factor·255 (wrapping uint8) to the HSV hue channel."""
    h, s, v = img.convert("HSV").split()
    shifted = (np.asarray(h, np.int32) + int(factor * 255)) % 256
    return Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8), "L"), s, v)).convert("RGB")


def draw_color_jitter(rng: np.random.Generator, jitter) -> tuple[tuple, tuple]:
    """torchvision ColorJitter's draws: the factors of the ops with non-zero strength first,
    then the random op order. Returns (op order with −1 for the ops that are off, factors)."""
    factors = [1.0, 1.0, 1.0, 0.0]
    *strengths, hue_strength = jitter
    for i, strength in enumerate(strengths):
        if strength > 0:
            factors[i] = rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength)
    if hue_strength > 0:
        factors[3] = rng.uniform(-hue_strength, hue_strength)
    order = tuple(int(i) if jitter[i] > 0 else -1 for i in rng.permutation(4))
    return order, tuple(factors)


def draw_photometric(rng: np.random.Generator, spec: MultiCropSpec, blur_p: float, solarize_p: float):
    """The photometric draws of one view, in the order the PIL path has always made them:
    jitter applied? (then `draw_color_jitter`), grayscale?, blur? (then its radius), solarize?"""
    order, factors = (-1, -1, -1, -1), (1.0, 1.0, 1.0, 0.0)
    if rng.random() < spec.jitter_p:
        order, factors = draw_color_jitter(rng, spec.jitter)
    gray = bool(rng.random() < spec.gray_p)
    radius = rng.uniform(*spec.blur_radius) if rng.random() < blur_p else 0.0
    return photometric.ViewDraws(order, factors, gray, radius, bool(rng.random() < solarize_p))


def _color_jitter(img: Image.Image, rng: np.random.Generator, jitter) -> Image.Image:
    """torchvision ColorJitter on PIL (factors drawn first, ops applied in a random order)."""
    return apply_photometric(img, photometric.ViewDraws(*draw_color_jitter(rng, jitter)))


_ENHANCERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)


def apply_photometric(view: Image.Image, draws: photometric.ViewDraws) -> Image.Image:
    """The PIL path: ColorJitter in the drawn op order, grayscale, Gaussian blur, solarize."""
    for op in draws.jitter_order:
        if op == photometric.HUE:
            view = _adjust_hue(view, draws.factors[op])
        elif op >= 0:
            view = _ENHANCERS[op](view).enhance(draws.factors[op])
    if draws.gray:
        view = view.convert("L").convert("RGB")
    if draws.blur_radius:
        view = view.filter(ImageFilter.GaussianBlur(radius=draws.blur_radius))
    if draws.solarize:
        view = ImageOps.solarize(view, threshold=128)
    return view


class MultiCropTransform(grain.transforms.RandomMap):
    """grain RandomMap: {"image": uint8 (H, W[, 3])} → views + geometry (see `MultiCropSpec`).

    Output (other input keys pass through): `global` (n_g, S, S, 3) float32 normalised
    (``device_photometric``: uint8 before the photometric ops, plus `global_<param>` for
    each of `photometric.PARAMS`),
    `global_box` (n_g, 4) float32 (x1, y1, x2, y2) original pixels, `global_flip` (n_g,) bool,
    the same three `local*` keys when n_local > 0, `image_hw` (2,) int32, and optionally
    `<kind>_pos` (n, g², 2) and NeCo's `gc`/`all`.
    """

    def __init__(self, spec: MultiCropSpec):
        self.spec = spec

    def _view(self, img, box, size, blur_p, solarize_p, rng):
        """(view, flip, draws): float32 normalised after the PIL photometric ops, or uint8
        with the draws left to the device (`photometric`) when ``device_photometric``."""
        sp = self.spec
        view, _, flip = crop_resize_flip(img, box, size, _RESAMPLE[sp.interpolation], rng, sp.flip_p)
        draws = draw_photometric(rng, sp, blur_p, solarize_p)
        if sp.device_photometric:
            return np.asarray(view), flip, draws
        return normalize(apply_photometric(view, draws), sp.mean, sp.std), flip, draws

    def _crop_box(self, index, image_hw, scale, boxes, rng):
        sp = self.spec
        prior = boxes[: min(index, sp.n_global)]
        if sp.min_overlap is None or not prior:
            return sample_crop_box(rng, image_hw, scale, sp.ratio)
        threshold = int(image_hw[0] * image_hw[1] * sp.min_overlap)
        if index < sp.n_global:
            threshold *= 2
        best, best_overlap = None, -1.0
        for _ in range(sp.max_tries):
            box = sample_crop_box(rng, image_hw, scale, sp.ratio)
            overlap = _intersection_area(np.asarray(box, np.float64), prior).min()
            if overlap > threshold:
                return box
            if overlap > best_overlap:
                best, best_overlap = box, overlap
        return best

    def random_map(self, element, rng: np.random.Generator):
        sp = self.spec
        image = np.asarray(element["image"])
        img = Image.fromarray(image).convert("RGB")
        image_hw = image.shape[:2]
        kinds = [("global", i) for i in range(sp.n_global)] + [("local", i) for i in range(sp.n_local)]
        boxes, views, flips, draws = [], [], [], []
        for index, (kind, i) in enumerate(kinds):
            is_global = kind == "global"
            box = self._crop_box(
                index, image_hw, sp.global_scale if is_global else sp.local_scale, boxes, rng
            )
            view, flip, view_draws = self._view(
                img,
                box,
                sp.global_size if is_global else sp.local_size,
                sp.global_blur_p[i] if is_global else sp.local_blur_p,
                sp.global_solarize_p[i] if is_global else 0.0,
                rng,
            )
            boxes.append(box)
            views.append(view)
            flips.append(flip)
            draws.append(view_draws)

        out = {k: v for k, v in element.items() if k != "image"}
        out["image_hw"] = np.asarray(image_hw, np.int32)
        box_arr = np.asarray(boxes, np.float32)
        flip_arr = np.asarray(flips, bool)
        for kind, sl, size in (
            ("global", slice(0, sp.n_global), sp.global_size),
            ("local", slice(sp.n_global, None), sp.local_size),
        ):
            if not views[sl]:
                continue
            out[kind] = np.stack(views[sl])
            out[f"{kind}_box"] = box_arr[sl]
            out[f"{kind}_flip"] = flip_arr[sl]
            if sp.device_photometric:
                width = photometric.blur_width(sp.blur_radius[1])
                for name, value in photometric.encode(draws[sl], width).items():
                    out[f"{kind}_{name}"] = value
            if sp.patch_size is not None:
                out[f"{kind}_pos"] = patch_centers(box_arr[sl], flip_arr[sl], size // sp.patch_size)
        if sp.pair_boxes:
            sizes = [sp.global_size] * sp.n_global + [sp.local_size] * sp.n_local
            out["gc"], out["all"] = intersection_boxes(
                box_arr[: sp.n_global], sizes[: sp.n_global], box_arr, sizes
            )
        return out


def eval_transform(image, mask=None, size=448, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Evaluation preprocessing (evaluation.md): squash to size (int or (h, w)), image bilinear
    (PIL, antialiased), mask nearest, then mean/std. Returns (image float32 (h, w, 3), mask)."""
    h, w = (int(size), int(size)) if np.ndim(size) == 0 else size
    img = Image.fromarray(np.asarray(image)).convert("RGB")
    img = img.resize((w, h), Image.Resampling.BILINEAR)
    arr = normalize(img, mean, std)
    if mask is None:
        return arr, None
    mask = np.asarray(mask)
    as_pil = mask if mask.dtype == np.uint8 else mask.astype(np.int32)  # PIL "L" or "I"
    resized = Image.fromarray(as_pil).resize((w, h), Image.Resampling.NEAREST)
    return arr, np.asarray(resized).astype(mask.dtype)
