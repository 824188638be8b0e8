"""Backbones: the Flax ViT family, named variants, and official-weight import/export."""

from dense_jax.models.registry import SCENES_BACKBONE, SCENES_BACKBONE_LONG, VARIANTS, create, variant_config
from dense_jax.models.vit import VisionTransformer
from dense_jax.models.weights import load, load_backbone_params, save_official

__all__ = [
    "SCENES_BACKBONE",
    "SCENES_BACKBONE_LONG",
    "VARIANTS",
    "VisionTransformer",
    "create",
    "load",
    "load_backbone_params",
    "save_official",
    "variant_config",
]
