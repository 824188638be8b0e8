"""Methods as small modules of pure functions that the one trainer calls (architecture.md).

The training CLI looks a method up by ``config.method`` (`get`) and hands the module to the
trainer; ``dense_jax.train`` never imports this package and the methods never import the
trainer (both build on ``dense_jax.core``). A method module exposes:

Required
    ``heads(config) -> nn.Module``: the head(s) on the backbone's features.
    ``init_aux(config, rng) -> dict``: non-parameter state (centers, banks, queues, pointers),
        arrays only. A leaf may be an ``nn.LogicallyPartitioned`` box with logical names, e.g.
        ``("batch", None)`` for a bank whose rows are split over the 'data' mesh axis; plain
        arrays are replicated. It is carried, sharded and checkpointed with the state. It runs
        when the trainer is built, so it is where a method checks its config
        (`MethodConfigError`).
    ``loss(params, teacher, aux, batch, ctx) -> (loss, LossOutput | (metrics, new_aux))``:
        pure and jit-able; the trainer differentiates it w.r.t. ``params`` (the student,
        ``{"backbone", "head"}``) only. ``teacher`` is the EMA tree (``{}`` without one);
        ``ctx`` a `dense_jax.core.context.StepContext` (config, mesh, schedules, step, this
        step's key, the student's non-parameter collections). ``metrics``: scalars.

Optional
    ``head_input_shape(config) -> tuple``: the shape of the features the head is initialised
        on (default (1, D); a spatial decoder gives a (1, h, w, D) token map, see
        `dense_jax.models.build.head_input_shape`).
    ``transform(config) -> grain.transforms.RandomMap``: the method's own input transform
        (default: the multi-crop transform of ``config.crops``); with ``config.data.masks``
        the training source yields ``mask`` next to ``image``.
    ``predict(params, model_state, images, config) -> dict``: inference outputs for the
        evaluators and PNG writers (e.g. ``{"logits": (B, H, W, C)}`` of a segmentation network).
    ``param_groups(params) -> labels``: optimizer groups (default `param_groups`), each group
        needing ``config.optim.lr_scale[group]``; see `dense_jax.models.build.param_groups`.
    ``init_teacher(config, student_params, rng) -> teacher_params``: the teacher at step 0
        (default: a copy of the student). No teacher at all with ``config.teacher.ema=False``.

Heads with non-parameter collections (BatchNorm statistics) get them in ``ctx.model_state``
and return the new values as ``LossOutput.model_state``.

Why one ``loss`` and not a split ``targets`` (teacher, no gradients) + ``loss`` (student):
CrIBo's order teacher → cluster → bank search → enqueue → student loss reads naturally inside
one function under ``stop_gradient``; the gradient is taken w.r.t. the student only, so the
teacher half costs no backward pass either way.

New methods (CrIBo, COMUS self-training) add a module and a config, never a trainer fork. COMUS
as a whole is a staged pipeline (`PIPELINES`) whose self-training rounds are ``segmentation``
runs of the trainer.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from dense_jax.core.context import LossOutput, StepContext  # noqa: F401  (the interface's types)

METHODS: dict[str, str] = {
    "cribo": "dense_jax.methods.cribo",
    "croc": "dense_jax.methods.croc",
    "dino": "dense_jax.methods.dino",
    "neco": "dense_jax.methods.neco",
    "segmentation": "dense_jax.methods.segmentation",
}

# Staged pipelines that call the trainer themselves (``run(config, workdir, fit)``), run by the
# training CLI in place of one training run.
PIPELINES: dict[str, str] = {"comus": "dense_jax.methods.comus.pipeline"}

_REQUIRED = ("heads", "init_aux", "loss")


class UnknownMethodError(ValueError):
    """``config.method`` names no registered method."""


class MethodConfigError(ValueError):
    """A method's settings do not fit together or with the run (raised when the trainer is
    built, from the method's ``init_aux``; the training CLI prints it as one line)."""


def check(module: ModuleType) -> ModuleType:
    """`module`, after checking that it has the required functions."""
    missing = [f for f in _REQUIRED if not callable(getattr(module, f, None))]
    if missing:
        raise TypeError(f"method module {module.__name__} lacks {missing}")
    return module


def get(name: str) -> ModuleType:
    """The method module registered as `name`, with its interface checked."""
    if name not in METHODS:
        raise UnknownMethodError(
            f"unknown method {name!r} (config.method); known methods: {', '.join(sorted(METHODS))}"
        )
    return check(importlib.import_module(METHODS[name]))


def pipeline(name: str) -> ModuleType:
    """The staged pipeline registered as `name` (`PIPELINES`)."""
    return importlib.import_module(PIPELINES[name])
