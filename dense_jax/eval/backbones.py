"""The frozen backbone to evaluate: a weight file, a dense_jax training workdir, or random init.

``config.weights`` (evaluation configs) may be
- ``""``: random init of ``config.model.variant`` (demos and the random-init baseline);
- a weight file in any layout ``dense_jax.models.load`` reads (official DINO/DINOv2, NeCo,
  Leopart, timm, HF, our own ``.npz``/``.safetensors`` exports; ``variant="auto"`` infers the
  architecture);
- a training workdir of ``python -m dense_jax.main`` (or its ``ckpt/`` folder): the EMA
  *teacher* backbone of the latest checkpoint (evaluation.md §0: heads are dropped), with the
  architecture read from the checkpoint's own config. Only the ``teacher/backbone`` subtree is
  read (orbax partial restore), never the optimizer state.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc

from dense_jax import models
from dense_jax.models import build

BackboneFn = Callable[[Any, jax.Array], dict]


def is_run(path: str) -> bool:
    """A dense_jax training workdir (``ckpt/<step>``) or an orbax checkpoint folder itself."""
    return any(
        os.path.isdir(c) and any(d.isdigit() for d in os.listdir(c))
        for c in (os.path.join(path, "ckpt"), path)
    )


def _abstract_backbone(model) -> dict:
    """Shapes and dtypes of ``model``'s params, on the first device (the restore target)."""
    size = model.patch_size * 2
    shapes = nn.unbox(
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))["params"]
    )
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)


def from_run(path: str, config: mlc.ConfigDict, read_teacher: Callable) -> tuple[BackboneFn, Any, str, dict]:
    """The teacher backbone of a training workdir, with the run's own architecture and the
    evaluation's dtype and outputs. ``read_teacher(path, target) -> (params, run_config, step)``
    is the trainer's checkpoint reader (``dense_jax.train.restore.teacher_backbone``),
    handed in by the CLI so that this layer does not import the trainer."""
    eval_overrides = dict(dtype=config.model.dtype, n_last_blocks=config.model.n_last_blocks)

    def run_model(run_config):
        arch = {k: v for k, v in run_config["model"].items() if k != "variant"}
        return models.create(run_config["model"]["variant"], **{**arch, **eval_overrides})

    params, run_config, step = read_teacher(path, lambda rc: _abstract_backbone(run_model(rc)))
    model = run_model(run_config)
    description = f"{path} step {step} teacher ({run_config['model']['variant']})"
    return _apply_fn(model), params, description, build.model_config(model, run_config["model"]["variant"])


def load(config: mlc.ConfigDict) -> tuple[BackboneFn, Any, str, dict]:
    """``(backbone_fn, params, description, model_config)`` for a weight file or random init.

    ``backbone_fn(params, images)`` returns the ViT output dict (``patch``, ``last_blocks``,
    ``attn_cls``, ...) in inference mode; ``model_config`` rebuilds the same ViT through
    ``dense_jax.models.build.backbone``. ``config.model.dtype`` and ``n_last_blocks`` always
    apply; the architecture comes from ``config.model.variant`` (``auto``: from the file).
    """
    eval_overrides = dict(dtype=config.model.dtype, n_last_blocks=config.model.n_last_blocks)
    weights = os.path.expanduser(config.weights)
    if weights:
        model, params = models.load(
            config.model.variant, weights, select=config.weights_select or None, **eval_overrides
        )
        description = f"{weights} ({config.model.variant})"
    else:
        model, params = models.load(config.model.variant, None, seed=config.seed, **eval_overrides)
        description = f"random init ({config.model.variant}, seed {config.seed})"
    return _apply_fn(model), params, description, build.model_config(model, config.model.variant)


def _apply_fn(model) -> BackboneFn:
    def backbone_fn(p, images):
        return model.apply({"params": p}, images)

    return backbone_fn
