"""Models from a config section: the backbone of ``config.model`` and a head's initial params."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dense_jax.models.registry import VARIANTS, create
from dense_jax.models.vit import VisionTransformer

if TYPE_CHECKING:  # configs are ml_collections files; the step runs without the package
    import ml_collections as mlc


def backbone(model: mlc.ConfigDict) -> VisionTransformer:
    """The ViT of a ``config.model`` section: ``variant`` names a registry entry, every other key
    overrides a `VisionTransformer` attribute (the student's; clone with ``drop_path_rate=0``
    for a teacher or a frozen backbone)."""
    overrides = {k: v for k, v in model.items() if k != "variant"}
    return create(model.variant, **overrides)


def model_config(model: VisionTransformer, variant: str) -> dict:
    """A JSON-ready ``config.model`` section that `backbone` turns back into `model`: every
    constructor field as an override of `variant` (``"auto"`` becomes any registry name)."""
    fields = {
        f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in ("parent", "name")
    }
    fields = {k: (np.dtype(v).name if k in ("dtype", "residual_dtype") else v) for k, v in fields.items()}
    return {"variant": variant if variant in VARIANTS else next(iter(VARIANTS)), **fields}


def init_variables(module: nn.Module, rng: jax.Array, input_shape: tuple[int, ...]) -> tuple[Any, Any]:
    """(boxed params, other collections) of `module` initialised on zeros of `input_shape`.

    The other collections (e.g. BatchNorm's ``batch_stats``) come back as a dict, ``{}`` for a
    module without any."""
    variables = dict(module.init(rng, jnp.zeros(input_shape, jnp.float32)))
    return variables.pop("params", {}), variables


def head_input_shape(config: mlc.ConfigDict, rank: str = "vector", channels: int = 0) -> tuple[int, ...]:
    """(1, C) or, for ``rank="map"``, (1, g, g, C): g the token grid of ``config.crops.global_size``,
    C = `channels` or the backbone's width."""
    vit = backbone(config.model)
    channels = channels or vit.embed_dim
    if rank == "vector":
        return (1, channels)
    grid = config.crops.global_size // vit.patch_size
    return (1, grid, grid, channels)


def init_head(
    config: mlc.ConfigDict, head: nn.Module, rng: jax.Array, input_shape: tuple[int, ...] | None = None
) -> tuple[Any, Any]:
    """(boxed params, other collections) of `head` on features of `input_shape` (default (1, D))."""
    return init_variables(head, rng, input_shape or head_input_shape(config))


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
