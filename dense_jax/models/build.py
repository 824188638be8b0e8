"""Models from a config section: the backbone of ``config.model`` and a head's initial params."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc

from dense_jax.models.registry import create
from dense_jax.models.vit import VisionTransformer


def backbone(model: mlc.ConfigDict) -> VisionTransformer:
    """The ViT of a ``config.model`` section: ``variant`` names a registry entry, every other key
    overrides a `VisionTransformer` attribute (the student's; clone with ``drop_path_rate=0``
    for a teacher or a frozen backbone)."""
    overrides = {k: v for k, v in model.items() if k != "variant"}
    return create(model.variant, **overrides)


def init_variables(module: nn.Module, rng: jax.Array, input_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """(boxed params, other collections) of `module` initialised on zeros of `input_shape`.

    The other collections (e.g. BatchNorm's ``batch_stats``) come back as a dict, ``{}`` for a
    module without any."""
    variables = dict(module.init(rng, jnp.zeros(input_shape, jnp.float32)))
    return variables.pop("params", {}), variables


def head_input_shape(config: mlc.ConfigDict, rank: str = "vector") -> tuple[int, ...]:
    """(1, D) or, for ``rank="map"``, (1, g, g, D) with g the token grid of ``config.crops.global_size``."""
    vit = backbone(config.model)
    if rank == "vector":
        return (1, vit.embed_dim)
    grid = config.crops.global_size // vit.patch_size
    return (1, grid, grid, vit.embed_dim)


def init_head(config: mlc.ConfigDict, head: nn.Module, rng: jax.Array,
              rank: str = "vector") -> tuple[Any, Any]:
    """(boxed params, other collections) of `head` on backbone features of the given rank."""
    return init_variables(head, rng, head_input_shape(config, rank))


def param_groups(params: Any) -> Any:
    """Default optimizer groups of a ``{"backbone", "head"}`` tree: the backbone, the head,
    and any head layer named ``last_layer*`` (DINO freezes it for the first
    ``optim.freeze_last_layer`` epochs, croc.md §7)."""

    def label(path, _):
        keys = [getattr(k, "key", "") for k in path]
        if keys[0] == "backbone":
            return "backbone"
        return "last_layer" if any(str(k).startswith("last_layer") for k in keys) else "head"

    return jax.tree_util.tree_map_with_path(label, params)
