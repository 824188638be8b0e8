"""Binary saliency masks for COMUS discovery (comus.md §2, §8 row "BASNet").

Three selectable sources (``config.saliency.type``):

- ``"dir"``: the user's binary PNGs, ``<dir>/<id>.png`` (the reference's ``saliency.type: dir``,
  e.g. MaskContrast's released unsupervised VOC saliency). Values > half the PNG's range are
  salient. Missing files are counted, listed and their images skipped; above
  ``max_missing_fraction`` of the split one `SaliencyError` stops the run. A mask whose size is
  not the image's is an error naming the file.
- ``"attention"``: ViT-attention saliency in JAX on the same backbone, on the image squashed to
  ``size``² (§8(c)). ``method="dinoseg"`` (LOST's ``dino_seg``): the last block's CLS->patch
  attention of head ``head`` (-1: the mean over heads), the patches holding ``mass`` (0.6) of it,
  then the largest 4-connected component. ``method="lost"``: last-block keys (heads concatenated,
  CLS dropped), A = K Kᵀ; degree = #positive off-diagonal entries; seed = the lowest-degree patch;
  among the ``k_patches`` (100) lowest-degree patches keep those with A[seed, ·] > 0; the mask is
  the 4-connected component of Σ_s A[s, ·] > 0 holding the seed. Patch masks go to the original
  size by nearest resizing (as upsampling by the patch size, then squashing back).
- ``"checkpoint"``: a user-supplied saliency network (the reference's BASNet). ``factory``
  (``"package.module:function"``) is called with ``checkpoint`` and returns
  ``predict(images uint8 (B, S, S, 3)) -> probabilities (B, S, S)``; the maps are min-max
  normalised per image (``normalize="image"``, our default) or over the whole batch
  (``"batch"``, the reference's per-GPU quirk, §10.3) and thresholded at ``threshold`` (0.5).

Every mode ends at the original resolution; an image whose mask has at most ``min_area`` (400)
salient pixels gets no proposal (§2; `dense_jax.methods.comus.discovery.proposal`).

Differences from LOST's code: the largest DINOSeg component is the clean one (LOST's loop skips
the highest label, and a single component makes it return the background); the image is squashed
to a square instead of keeping its aspect ratio.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from scipy import ndimage

from dense_jax.core.errors import ReportedError
from dense_jax.data.transforms import eval_transform
from dense_jax.eval.foreground import keep_mass
from dense_jax.ops.resize import nearest_resize

TYPES = ("dir", "attention", "checkpoint")
METHODS = ("dinoseg", "lost")


class SaliencyError(ReportedError, ValueError):
    """Saliency inputs that cannot be used (missing or mis-sized masks, missing checkpoint)."""


# ----------------------------------------------------------------------------- attention modes
def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a bool (h, w) mask (ties: the lowest label); all
    False when the mask is empty."""
    labelled, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask, bool)
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)[1:]
    return labelled == 1 + int(np.argmax(sizes))


def dinoseg(attn_heads: jax.Array, mass: float = 0.6, head: int = 0) -> np.ndarray:
    """DINOSeg patch masks (B, h, w) bool from the CLS attention (B, heads, h, w): the patches
    holding ``mass`` of head ``head``'s attention (-1: the head mean), largest component."""
    maps = attn_heads.mean(axis=1) if head < 0 else attn_heads[:, head]
    kept = np.asarray(jax.device_get(keep_mass(maps.astype(jnp.float32), mass)))
    return np.stack([largest_component(m) for m in kept])


@functools.partial(jax.jit, static_argnames=("k_patches",))
def lost_correlation(keys: jax.Array, k_patches: int = 100) -> tuple[jax.Array, jax.Array]:
    """LOST's seed and seed-expansion map from last-block keys (B, heads, 1 + N, hd):
    returns (M (B, N) = Σ_{s ∈ similar} A[s, ·], seed (B,)), A = K Kᵀ over the patch keys with
    the heads concatenated. Degree ties go to the lower patch index (stable sort)."""
    b, _, t, _ = keys.shape
    k = keys[:, :, 1:].transpose(0, 2, 1, 3).reshape(b, t - 1, -1).astype(jnp.float32)
    a = jnp.einsum("bnd,bmd->bnm", k, k, precision=jax.lax.Precision.HIGHEST)
    off_diagonal = ~jnp.eye(t - 1, dtype=bool)
    degree = jnp.sum((a > 0) & off_diagonal, axis=-1)
    order = jnp.argsort(degree, axis=-1, stable=True)
    seed = order[:, 0]
    potentials = order[:, : min(k_patches, t - 1)]
    seed_row = jnp.take_along_axis(a, seed[:, None, None], axis=1)[:, 0]  # (B, N)
    similar = jnp.take_along_axis(seed_row, potentials, axis=1) > 0
    rows = jnp.take_along_axis(a, potentials[:, :, None], axis=1)  # (B, k, N)
    return jnp.sum(rows * similar[:, :, None], axis=1), seed


def seed_component(correlation: np.ndarray, seed: int) -> np.ndarray:
    """The 4-connected component of ``correlation > 0`` (h, w) that holds the flat index
    ``seed`` (LOST ``detect_box``); all False when the seed itself is not positive."""
    labelled, _ = ndimage.label(correlation > 0)
    label = labelled.ravel()[seed]
    return labelled == label if label else np.zeros(correlation.shape, bool)


def lost(keys: jax.Array, grid: tuple[int, int], k_patches: int = 100) -> np.ndarray:
    """LOST patch masks (B, h, w) bool from last-block keys (B, heads, 1 + h·w, hd)."""
    m, seed = jax.device_get(lost_correlation(keys, k_patches=k_patches))
    return np.stack([seed_component(c.reshape(grid), int(s)) for c, s in zip(m, seed)])


def to_original(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (h, w) patch or pixel mask nearest-resized to the original (H, W)."""
    return np.asarray(nearest_resize(np.asarray(mask), tuple(shape)), bool)


def attention_masks(extractor, images, cfg) -> list[np.ndarray]:
    """Attention saliency (``cfg.method``) of uint8 images of any sizes, each squashed to
    ``cfg.size``² for the backbone ``extractor`` (kinds ``attn_heads`` for DINOSeg, ``keys`` for
    LOST); bool masks at each image's original size."""
    if cfg.method not in METHODS:
        raise ValueError(f"unknown saliency.method {cfg.method!r}; use {' or '.join(METHODS)}")
    batch = np.zeros(
        (extractor.batch_size(max(len(images), cfg.batch_size)), cfg.size, cfg.size, 3), np.float32
    )
    batch[: len(images)] = [eval_transform(im, size=cfg.size)[0] for im in images]
    out = extractor(batch)
    if cfg.method == "dinoseg":
        patches = dinoseg(out["attn_heads"], cfg.mass, cfg.head)
    else:
        grid = (cfg.size // extractor.patch_size(cfg.size),) * 2
        patches = lost(out["keys"], grid, cfg.k_patches)
    return [to_original(m, im.shape[:2]) for m, im in zip(patches, images)]


# ----------------------------------------------------------------------------- checkpoint mode
def threshold_probabilities(probs: np.ndarray, threshold: float = 0.5, normalize: str = "image"):
    """(B, S, S) saliency probabilities -> bool masks: min-max normalised per image (our default)
    or over the whole batch (``"batch"``, the reference's per-GPU normalisation), then > threshold."""
    probs = np.asarray(probs, np.float64)
    if normalize == "image":
        lo = probs.min(axis=(1, 2), keepdims=True)
        hi = probs.max(axis=(1, 2), keepdims=True)
    elif normalize == "batch":
        lo, hi = probs.min(), probs.max()
    else:
        raise ValueError(f"unknown saliency.normalize {normalize!r}; use image or batch")
    return (probs - lo) / np.maximum(hi - lo, 1e-12) > threshold


def load_checkpoint_model(cfg) -> Callable[[np.ndarray], np.ndarray]:
    """The user's saliency network: ``cfg.factory`` ("module:function") called with
    ``cfg.checkpoint``; one clear error when either is missing."""
    if not cfg.checkpoint or not os.path.exists(os.path.expanduser(cfg.checkpoint)):
        raise SaliencyError(
            f"saliency.type='checkpoint' needs a saliency checkpoint; {cfg.checkpoint or '(none set)'} "
            "does not exist. Put the BASNet (DeepUSPS, MaskContrast) checkpoint there and set "
            "--config.saliency.checkpoint=PATH and --config.saliency.factory=module:function, or use "
            "saliency.type='dir' (your masks) or 'attention' (no weights needed)"
        )
    module, _, name = cfg.factory.partition(":")
    if not module or not name:
        raise SaliencyError(
            f"saliency.factory={cfg.factory!r} must name 'package.module:function', a function that "
            "takes the checkpoint path and returns predict(images uint8 (B, S, S, 3)) -> (B, S, S)"
        )
    return getattr(importlib.import_module(module), name)(os.path.expanduser(cfg.checkpoint))


def checkpoint_masks(predict: Callable, images, cfg) -> list[np.ndarray]:
    """The user network's saliency of uint8 images squashed to ``cfg.size``² (bilinear), thresholded
    (`threshold_probabilities`) and nearest-resized back to each original size (§2)."""
    squashed = np.stack(
        [
            np.asarray(Image.fromarray(im).resize((cfg.size, cfg.size), Image.Resampling.BILINEAR))
            for im in images
        ]
    )
    masks = threshold_probabilities(predict(squashed), cfg.threshold, cfg.normalize)
    return [to_original(m, im.shape[:2]) for m, im in zip(masks, images)]


# ----------------------------------------------------------------------------- dir mode
def read_mask_png(path: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A binary PNG as bool (H, W): values above half its range are salient; a size that is not
    the image's ``shape`` (when given) is an error naming the file."""
    with Image.open(path) as im:
        mask = np.asarray(im.convert("L") if im.mode not in ("L", "P", "1", "I") else im)
    if shape is not None and mask.shape[:2] != tuple(shape):
        raise SaliencyError(
            f"saliency mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{shape[1]}x{shape[0]}; masks must have the image's size"
        )
    return mask > (127 if mask.max() > 1 else 0)


def missing_masks(folder: str, ids: Iterable[str], max_missing_fraction: float) -> list[str]:
    """The sorted ids without ``<folder>/<id>.png``; more than ``max_missing_fraction`` of the ids
    missing is one error that counts them and names the first."""
    folder = os.path.expanduser(folder)
    if not os.path.isdir(folder):
        raise SaliencyError(
            f"saliency.dir={folder!r} is not a folder: put one binary PNG per image there, "
            "named <image id>.png"
        )
    ids = list(ids)
    missing = sorted(key for key in ids if not os.path.exists(os.path.join(folder, f"{key}.png")))
    if len(missing) > max_missing_fraction * len(ids):
        raise SaliencyError(
            f"{len(missing)} of {len(ids)} images have no saliency mask in {folder} (e.g. "
            f"{', '.join(missing[:5])}.png), more than saliency.max_missing_fraction="
            f"{max_missing_fraction}"
        )
    return missing
