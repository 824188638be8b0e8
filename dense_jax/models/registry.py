"""Named backbone variants: the DINO and DINOv2 families and small ViTs for CPU demos.

Names follow torch hub (``dino_vits16``, ``dinov2_vits14_reg4``, ...). The interpolation
attributes are those of each family's reference code (neco.md §2): DINO and DINOv2
resize position embeddings with ``scale_factor=(g + 0.1)/M`` and no antialias; the
official DINOv2 register models use ``size=g`` with antialias.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp

from dense_jax.models.vit import VisionTransformer

# The shipped DINO teachers trained on the built-in scenes (vit_demo16, float16, official
# layout; benchmarks/scenes_backbone.py re-creates them, benchmarks/scenes.md scores them).
# SCENES_BACKBONE (1024 steps, `dino_coco.py:scenes_backbone`) stands in for DINO ViT-S/8 in
# the COMUS demo: its CLS attention gives the better LOST saliency. SCENES_BACKBONE_LONG (3072
# steps on 8192 scenes, `:scenes_backbone_long`) stands in for DINOv2 in the NeCo demo: its
# patch tokens score higher on K-means and Hummingbird.
_ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")
SCENES_BACKBONE = os.path.join(_ASSETS, "scenes_vit_demo16_dino.safetensors")
SCENES_BACKBONE_LONG = os.path.join(_ASSETS, "scenes_vit_demo16_dino_long.safetensors")
SCENES_BACKBONE_HINT = (  # a config's init_from_hint when it starts from one of them
    "it ships with the package (dense_jax/assets); re-create it with benchmarks/scenes_backbone.py"
)

_SIZES = {  # embed_dim, depth, heads
    "t": (192, 12, 3),
    "s": (384, 12, 6),
    "b": (768, 12, 12),
    "l": (1024, 24, 16),
}


def _dino(size: str, patch: int) -> dict[str, Any]:
    dim, depth, heads = _SIZES[size]
    return dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, pos_grid=224 // patch)


def _dinov2(size: str, registers: int = 0) -> dict[str, Any]:
    dim, depth, heads = _SIZES[size]
    cfg = dict(
        patch_size=14,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        pos_grid=37,
        layerscale=1e-5,
        mask_token=True,
    )
    if registers:
        cfg.update(num_registers=registers, interp_offset=0.0, interp_antialias=True)
    return cfg


VARIANTS: dict[str, dict[str, Any]] = {
    "dino_vits8": _dino("s", 8),
    "dino_vits16": _dino("s", 16),
    "dino_vitb8": _dino("b", 8),
    "dino_vitb16": _dino("b", 16),
    "dinov2_vits14": _dinov2("s"),
    "dinov2_vitb14": _dinov2("b"),
    "dinov2_vitl14": _dinov2("l"),
    "dinov2_vits14_reg4": _dinov2("s", 4),
    "dinov2_vitb14_reg4": _dinov2("b", 4),
    "dinov2_vitl14_reg4": _dinov2("l", 4),
    # Small models for the CPU demos on the built-in scenes (not released weights).
    "vit_tiny16": _dino("t", 16),
    "vit_demo16": dict(patch_size=16, embed_dim=192, depth=4, num_heads=3, pos_grid=6),
    "vit_demo14": dict(
        patch_size=14,
        embed_dim=192,
        depth=4,
        num_heads=3,
        pos_grid=7,
        layerscale=1e-5,
        mask_token=True,
        num_registers=4,
    ),
}


def variant_config(variant: str, **overrides: Any) -> dict[str, Any]:
    """Constructor arguments of a named variant, with overrides applied."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown backbone variant {variant!r}; known: {', '.join(sorted(VARIANTS))}")
    cfg = dict(VARIANTS[variant])
    unknown = set(overrides) - set(VisionTransformer.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown backbone options {sorted(unknown)}")
    cfg.update(overrides)
    for key in ("dtype", "residual_dtype"):
        if isinstance(cfg.get(key), str):
            cfg[key] = jnp.dtype(cfg[key])
    return cfg


def create(variant: str, **overrides: Any) -> VisionTransformer:
    """A `VisionTransformer` for a named variant (e.g. ``create("dino_vits16", drop_path_rate=0.1)``)."""
    return VisionTransformer(**variant_config(variant, **overrides))
