"""SSL methods as small modules of pure functions that the one trainer calls (architecture.md).

A method module (registered in `METHODS` under ``config.method``) exposes:

``heads(config) -> nn.Module``
    the projection head(s), applied to backbone features of width ``embed_dim``.
``init_aux(config, rng) -> dict``
    non-parameter state (centers, banks, queues, pointers): arrays only. A leaf may be an
    ``nn.Partitioned`` box with logical names (e.g. ``("batch", None)`` for a bank split over
    'data'); plain arrays are replicated.
``loss(student_params, teacher_params, aux, batch, rng, step, config) -> (loss, (metrics, new_aux))``
    pure and jit-able; the trainer differentiates it w.r.t. ``student_params`` only. Param
    trees are ``{"backbone": ..., "head": ...}``; ``metrics`` is a dict of scalars.
``param_groups(params) -> labels`` (optional)
    a tree like ``params`` whose leaves name optimizer groups (default `param_groups`:
    "backbone", "head", "last_layer"); each group needs ``config.optim.lr_scale[group]``.
``init_teacher(config, student_params, rng) -> teacher_params`` (optional)
    the teacher at step 0 (same tree); default: a copy of the student.

New methods (CrOC, CrIBo, NeCo) add a module and a config, never a trainer fork.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc

from dense_jax import models

METHODS: dict[str, str] = {
    "dino": "dense_jax.methods.dino",
    "neco": "dense_jax.methods.neco",
}

_REQUIRED = ("heads", "init_aux", "loss")


class UnknownMethodError(ValueError):
    """``config.method`` names no registered method."""


def get(name: str) -> ModuleType:
    """The method module registered as `name`, with its interface checked."""
    if name not in METHODS:
        raise UnknownMethodError(f"unknown method {name!r} (config.method); known methods: {', '.join(sorted(METHODS))}")
    module = importlib.import_module(METHODS[name])
    missing = [f for f in _REQUIRED if not callable(getattr(module, f, None))]
    if missing:
        raise TypeError(f"method module {module.__name__} lacks {missing}")
    return module


def backbone(config: mlc.ConfigDict) -> models.VisionTransformer:
    """The ViT of `config.model` (student: ``train=True``; teacher: ``train=False``, no drop path)."""
    overrides = {k: v for k, v in config.model.items() if k != "variant"}
    return models.create(config.model.variant, **overrides)


def init_head(config: mlc.ConfigDict, head: nn.Module, rng: jax.Array) -> Any:
    """Boxed params of `head` on features of the backbone's width (``embed_dim``)."""
    features = jnp.zeros((1, backbone(config).embed_dim), jnp.float32)
    return head.init(rng, features)["params"]


def param_groups(params: Any) -> Any:
    """Default optimizer groups: the backbone, the head, and any head layer named
    ``last_layer*`` (frozen during ``optim.freeze_last_layer`` epochs, croc.md §7)."""

    def label(path, _):
        keys = [getattr(k, "key", "") for k in path]
        if keys[0] == "backbone":
            return "backbone"
        return "last_layer" if any(str(k).startswith("last_layer") for k in keys) else "head"

    return jax.tree_util.tree_map_with_path(label, params)


def groups_of(method: ModuleType, params: Any) -> Any:
    """The method's own `param_groups` if it defines one, else the default."""
    return getattr(method, "param_groups", param_groups)(params)
