"""What a method's functions receive besides arrays: the per-step context and the loss output.

The trainer builds one `StepContext` per traced step. It carries the static pieces (config,
mesh, schedules) next to the traced ones (step counter, step key, non-parameter model
collections), so that a method can write a bank slice per device with `jax.shard_map` over
``ctx.mesh`` or read a schedule at ``ctx.step`` without the trainer knowing about either.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
from jax.sharding import Mesh

from dense_jax.core.schedules import Schedules

if TYPE_CHECKING:  # configs are ml_collections files; the step runs without the package
    import ml_collections as mlc


@dataclasses.dataclass(frozen=True)
class StepContext:
    """config: the resolved run config; mesh: the training mesh; schedules: lr / wd / EMA /
    epoch as functions of a step array; step: the step being taken (traced int32); rng: this
    step's key (already folded with the step); model_state: the non-parameter collections of
    the student (e.g. ``{"head": {"batch_stats": ...}}``), ``{}`` for models without any."""

    config: mlc.ConfigDict
    mesh: Mesh
    schedules: Schedules
    step: jax.Array
    rng: jax.Array
    model_state: Any = dataclasses.field(default_factory=dict)


class LossOutput(NamedTuple):
    """The auxiliary output of a method's ``loss``: scalar metrics, the new aux state and,
    for models with non-parameter collections, their new values (None keeps the old ones).
    A plain ``(metrics, new_aux)`` tuple is accepted too."""

    metrics: dict
    aux: Any
    model_state: Any = None
