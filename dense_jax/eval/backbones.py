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
from dense_jax.train import checkpoint

BackboneFn = Callable[[Any, jax.Array], dict]


def _is_run(path: str) -> bool:
    """A dense_jax training workdir (``ckpt/<step>``) or an orbax checkpoint folder itself."""
    return any(os.path.isdir(c) and any(d.isdigit() for d in os.listdir(c))
               for c in (os.path.join(path, "ckpt"), path))


def _abstract_backbone(model) -> dict:
    """Shapes and dtypes of ``model``'s params, on the first device (the restore target)."""
    size = model.patch_size * 2
    shapes = nn.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))["params"])
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)


def load(config: mlc.ConfigDict) -> tuple[BackboneFn, Any, str]:
    """``(backbone_fn, params, description)`` for an evaluation config.

    ``backbone_fn(params, images)`` returns the ViT output dict (``patch``, ``last_blocks``,
    ``attn_cls``, ...) in inference mode. ``config.model.dtype`` and ``n_last_blocks`` always
    apply; the architecture comes from ``config.model.variant`` except for training workdirs.
    """
    eval_overrides = dict(dtype=config.model.dtype, n_last_blocks=config.model.n_last_blocks)
    weights = os.path.expanduser(config.weights)
    if weights and _is_run(weights):
        def run_model(run_config):  # the run's own architecture, evaluation dtype and outputs
            arch = {k: v for k, v in run_config["model"].items() if k != "variant"}
            return models.create(run_config["model"]["variant"], **{**arch, **eval_overrides})

        params, run_config, step = checkpoint.teacher_backbone(
            weights, lambda run_config: _abstract_backbone(run_model(run_config)))
        model = run_model(run_config)
        description = f"{weights} step {step} teacher ({run_config['model']['variant']})"
    elif weights:
        model, params = models.load(config.model.variant, weights, select=config.weights_select or None,
                                    **eval_overrides)
        description = f"{weights} ({config.model.variant})"
    else:
        model, params = models.load(config.model.variant, None, seed=config.seed, **eval_overrides)
        description = f"random init ({config.model.variant}, seed {config.seed})"

    def backbone_fn(p, images):
        return model.apply({"params": p}, images)

    return backbone_fn, params, description
