"""Where a run's first state comes from (big_vision's order, `restore_or_init`): this run's
own workdir, else ``config.resume`` (another run's checkpoint directory, full state and data
position), else a backbone handed in by the caller, else ``config.init_from`` (converted
backbone weights or another run's teacher, params only), else a fresh init. Checkpoints are
read through `dense_jax.train.checkpoint.Checkpointer`, so only intact steps are used.
"""

from __future__ import annotations

import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc

from dense_jax.train.checkpoint import Checkpointer
from dense_jax.train.state import TrainState, abstract_state


def _checkpoint_dir(path: str) -> str:
    """A run's workdir (holding ``ckpt/``) or a checkpoint directory itself."""
    nested = os.path.join(path, "ckpt")
    return nested if os.path.isdir(nested) else path


def newest_state(ckpt: Checkpointer, target: TrainState, data_iter) -> tuple[TrainState, int] | None:
    """(state, step) of the newest intact checkpoint in `ckpt` (see `Checkpointer`), or None."""
    return ckpt.newest_good(lambda step: ckpt.restore(step, target, data_iter))


def teacher_backbone(path: str, target: Callable[[dict], object], hint: str = "") -> tuple[dict, dict, int]:
    """(teacher backbone, run config dict, step) of a dense_jax run's newest intact checkpoint.

    ``path``: the run's workdir or its checkpoint directory. ``target(run_config)`` gives the
    abstract backbone params (``jax.ShapeDtypeStruct`` with shardings) to restore into; only
    ``state/teacher/backbone`` is read (partial restore, fingerprint checked), never the
    optimizer state. A run without a teacher (``teacher.ema=False``) gives its student backbone.
    """
    ckpt = Checkpointer(_checkpoint_dir(os.path.abspath(path)), read_only=True)

    def backbone(step: int) -> tuple[dict, dict]:
        run_config = ckpt.meta(step)["config"]
        tree = "teacher" if run_config["teacher"].get("ema", True) else "params"
        item = {tree: {"backbone": target(run_config)}}
        return ckpt.restore(step, item, partial=True)[tree]["backbone"], run_config

    try:
        found = ckpt.newest_good(backbone)
    finally:
        ckpt.close()
    if found is None:
        raise FileNotFoundError(f"{path!r} holds no dense_jax checkpoint" + (f"; {hint}" if hint else ""))
    (params, run_config), step = found
    return params, run_config, step


def _weights_file_backbone(config: mlc.ConfigDict, target) -> dict:
    """Backbone params from an official/converted weights file (`dense_jax.models.weights`)."""
    from dense_jax.models import registry, weights  # lazy: reads torch/safetensors files

    overrides = {k: v for k, v in config.model.items() if k != "variant"}
    # No logical rules while reading: weights.py unboxes its abstract params outside a trace,
    # where an active rules table + mesh would demand concrete shardings.
    with nn.logical_axis_rules(()):
        loaded = weights.load_backbone_params(
            config.init_from,
            registry.variant_config(config.model.variant, **overrides),
            select=config.init_from_select or None,
            ignore_unexpected=tuple(config.init_from_ignore),
        )
    expected = jax.tree.map(lambda s: (s.shape, s.dtype), target)
    got = jax.tree.map(lambda a: (tuple(a.shape), jnp.dtype(a.dtype)), loaded)
    if jax.tree.structure(expected) != jax.tree.structure(got) or expected != got:
        raise ValueError(f"weights in {config.init_from!r} do not match backbone {config.model.variant!r}")
    return jax.device_put(loaded, jax.tree.map(lambda s: s.sharding, target))


def load_pretrained_backbone(
    init: Callable[[], TrainState], shardings: TrainState, config: mlc.ConfigDict
) -> tuple[TrainState, str]:
    """(state, origin): a fresh state whose student and teacher backbones come from
    ``config.init_from``: a weights file, or another dense_jax run (workdir or checkpoint
    directory), whose latest teacher backbone is taken. A missing path raises
    FileNotFoundError with ``config.init_from_hint`` (what to run or download first)."""
    target = abstract_state(init, shardings).params["backbone"]
    origin = config.init_from
    if os.path.isdir(config.init_from):
        backbone, _, step = teacher_backbone(config.init_from, lambda _: target, config.init_from_hint)
        origin = f"{config.init_from} teacher step {step}"
    elif config.init_from_hint and not os.path.exists(config.init_from):
        raise FileNotFoundError(f"config.init_from={config.init_from!r} not found; {config.init_from_hint}")
    else:  # a missing file gets the weights module's download message
        backbone = _weights_file_backbone(config, target)
    return with_backbone(init(), backbone, config), origin


def with_backbone(state: TrainState, backbone, config: mlc.ConfigDict) -> TrainState:
    """`state` with `backbone` as the student's (and a copy as the teacher's) backbone."""
    state = state.replace(params={**state.params, "backbone": backbone})
    if config.teacher.ema:
        state = state.replace(teacher={**state.teacher, "backbone": jax.tree.map(jnp.copy, backbone)})
    return state


def restore_or_init(
    ckpt: Checkpointer,
    config: mlc.ConfigDict,
    init: Callable[[], TrainState],
    shardings: TrainState,
    data_iter,
    backbone=None,
) -> tuple[TrainState, str]:
    """(state, where it came from). `data_iter` is repositioned when a checkpoint is used;
    `backbone` (params placed like the state's) starts a fresh run in place of ``init_from``."""
    target = abstract_state(init, shardings)
    found = newest_state(ckpt, target, data_iter)
    if found is not None:
        return found[0], f"{ckpt.directory} step {found[1]}"
    if config.resume:
        other = Checkpointer(_checkpoint_dir(config.resume), read_only=True)
        try:
            found = newest_state(other, target, data_iter)
        finally:
            other.close()
        if found is None:
            raise FileNotFoundError(f"config.resume={config.resume!r} holds no dense_jax checkpoint")
        return found[0], f"{config.resume} step {found[1]}"
    if backbone is not None:
        # A copy: the step donates the state, and the caller's arrays must outlive the run.
        placement = jax.tree.map(lambda s: s.sharding, target.params["backbone"])
        placed = jax.tree.map(jnp.copy, jax.device_put(backbone, placement))
        return with_backbone(init(), placed, config), "given backbone"
    if config.init_from:
        return load_pretrained_backbone(init, shardings, config)
    return init(), "scratch"
