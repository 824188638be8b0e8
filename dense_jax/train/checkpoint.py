"""Orbax checkpoints: train state + grain iterator state + config JSON (jax-practices §7).

One checkpoint = ``state`` (StandardSave of the whole `TrainState`), ``data`` (this host's
grain iterator position) and ``meta`` (step and the resolved config). Saves are async by
default and the last ``ckpt.keep`` are kept. `restore_or_init` follows big_vision's order:
this run's own workdir, else ``config.resume`` (another run's checkpoint directory, full
state and data position), else ``config.init_from`` (converted backbone weights, params
only), else a fresh init.
"""

from __future__ import annotations

import os
from typing import Callable

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections as mlc
import orbax.checkpoint as ocp

from dense_jax.train.state import TrainState, abstract_state


def _state_handler() -> ocp.PyTreeCheckpointHandler:
    """PyTree handler for the state's jax.Arrays without replica-parallel saving.

    Replica-parallel writes slice every replicated array per replica with eagerly
    dispatched ops; on CPU their compiles dominate (smoke state: 16 s → 1.8 s per save).
    The state of our models is small enough for the primary replica to write alone.
    """
    registry = ocp.type_handlers.create_type_handler_registry(
        (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False))
    )
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


class Checkpointer:
    """A CheckpointManager over ``directory`` with this project's item layout."""

    def __init__(self, directory: str, config: mlc.ConfigDict, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={
                "state": _state_handler(),
                "data": grain.checkpoint.CheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
            options=ocp.CheckpointManagerOptions(
                max_to_keep=config.ckpt.keep,
                enable_async_checkpointing=config.ckpt.async_save,
                read_only=read_only,
                create=not read_only,
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: TrainState, data_iter, config: mlc.ConfigDict) -> None:
        self.manager.save(
            step,
            force=True,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeSave(state),
                data=grain.checkpoint.CheckpointSave(data_iter),
                meta=ocp.args.JsonSave({"step": step, "config": config.to_dict()}),
            ),
        )

    def restore(self, step: int, target: TrainState, data_iter) -> TrainState:
        """The state at `step` placed like `target`; `data_iter` is repositioned in place."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)
                ),
                data=grain.checkpoint.CheckpointRestore(data_iter),
            ),
        )
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _checkpoint_dir(path: str) -> str:
    """A run's workdir (holding ``ckpt/``) or a checkpoint directory itself."""
    nested = os.path.join(path, "ckpt")
    return nested if os.path.isdir(nested) else path


def _latest(path: str, config: mlc.ConfigDict, what: str) -> tuple[Checkpointer, int]:
    other = Checkpointer(_checkpoint_dir(path), config, read_only=True)
    step = other.latest_step()
    if step is None:
        raise FileNotFoundError(f"{what}={path!r} holds no dense_jax checkpoint")
    return other, step


def teacher_backbone(path: str, target: Callable[[dict], object], hint: str = "") -> tuple[dict, dict, int]:
    """(teacher backbone, run config dict, step) of a dense_jax run's latest checkpoint.

    ``path``: the run's workdir or its checkpoint directory. ``target(run_config)`` gives the
    abstract backbone params (``jax.ShapeDtypeStruct`` with shardings) to restore into; only
    ``state/teacher/backbone`` is read (partial restore), never the optimizer state. A run
    without a teacher (``teacher.ema=False``) gives its student backbone.
    """
    manager = ocp.CheckpointManager(
        _checkpoint_dir(os.path.abspath(path)),
        item_handlers={"state": _state_handler(), "meta": ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(read_only=True, create=False),
    )
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"{path!r} holds no dense_jax checkpoint" + (f"; {hint}" if hint else ""))
    run_config = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]["config"]
    tree = "teacher" if run_config["teacher"].get("ema", True) else "params"
    item = {tree: {"backbone": target(run_config)}}
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
            )
        ),
    )
    manager.close()
    return restored["state"][tree]["backbone"], run_config, step


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
    step = ckpt.latest_step()
    if step is not None:
        return ckpt.restore(step, abstract_state(init, shardings), data_iter), f"{ckpt.directory} step {step}"
    if config.resume:
        other, step = _latest(config.resume, config, "config.resume")
        state = other.restore(step, abstract_state(init, shardings), data_iter)
        other.close()
        return state, f"{config.resume} step {step}"
    if backbone is not None:
        target = abstract_state(init, shardings).params["backbone"]
        # A copy: the step donates the state, and the caller's arrays must outlive the run.
        placed = jax.tree.map(jnp.copy, jax.device_put(backbone, jax.tree.map(lambda s: s.sharding, target)))
        return with_backbone(init(), placed, config), "given backbone"
    if config.init_from:
        return load_pretrained_backbone(init, shardings, config)
    return init(), "scratch"
