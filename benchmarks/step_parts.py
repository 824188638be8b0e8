"""The pieces of a training step that every method shares, as separately jitted parts.

A part is a jitted function with the arguments it is timed on (`Part`); `median_ms` times it
(median of repeated calls after the compiling one, ``block_until_ready``). For a config:

- ``teacher_forward``: the teacher backbone (no stochastic depth) on the 2B global crops,
  returning what the methods read (CLS, patch tokens, last block's values);
- ``student_forward_backward``: gradient of the student backbone (train mode, stochastic
  depth) over all crops, w.r.t. its params;
- ``optimizer_ema``: `dense_jax.train.step.apply_gradients` (the optimizer update and the EMA
  teacher) on the trainer's real state.

Method-specific ops come from each method's parts module (`benchmarks/neco_parts.py`,
`benchmarks/croc_parts.py`: ``method_parts(config)``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from dense_jax.core.schedules import Schedules
from dense_jax.methods.dino import view_major
from dense_jax.models import build
from dense_jax.train.step import apply_gradients


class Part(NamedTuple):
    fn: Callable  # jitted
    args: tuple


def median_ms(fn: Callable, args: tuple, repeats: int) -> float:
    """Median milliseconds of ``fn(*args)`` over `repeats` calls after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def crops(config, key) -> tuple[jax.Array, jax.Array | None]:
    """Random (2B, S, S, 3) globals and (n_local·B, s, s, 3) locals (None without locals), view-major."""
    b, c = config.data.batch_size, config.crops

    @jax.jit
    def draw(k):
        k1, k2 = jax.random.split(k)
        g = view_major(jax.random.normal(k1, (b, c.n_global, c.global_size, c.global_size, 3)))
        if not c.n_local:
            return g, None
        return g, view_major(jax.random.normal(k2, (b, c.n_local, c.local_size, c.local_size, 3)))

    return draw(key)


def backbone_parts(config, params, key) -> dict[str, Part]:
    """``teacher_forward`` and ``student_forward_backward`` at the config's shapes and settings,
    on backbone `params` (e.g. the train state's)."""
    student = build.backbone(config.model)
    teacher = student.clone(drop_path_rate=0.0)
    globals_, locals_ = crops(config, key)

    def teacher_forward(p, images):
        out = teacher.apply({"params": p}, images)
        return out["cls"], out["patch"], out["v"]

    def student_objective(p, g, loc, k):
        total = 0.0
        for images, kk in zip((g, loc), jax.random.split(k)):
            if images is not None:
                out = student.apply({"params": p}, images, train=True, rngs={"dropout": kk})
                total += out["patch"].astype(jnp.float32).mean() + out["cls"].astype(jnp.float32).mean()
        return total

    return {
        "teacher_forward": Part(jax.jit(teacher_forward), (params, globals_)),
        "student_forward_backward": Part(
            jax.jit(jax.grad(student_objective)), (params, globals_, locals_, key)
        ),
    }


def optimizer_part(setup: Any, state: Any) -> Part:
    """``optimizer_ema`` of a `benchmarks.train_step.StepSetup` on `state`, gradients = params."""
    schedules = Schedules(setup.config)

    def update(state, grads):
        return apply_gradients(setup.config, setup.tx, schedules, state, grads)[:3]

    return Part(jax.jit(update), (state, state.params))


def parts_cli(default_config: str):
    """The method-parts scripts' shared command line: (args, config, median step seconds) for
    ``--config`` (default `default_config`) with its ``--set`` overrides, on a data-only mesh."""
    from benchmarks.train_step import load_config, time_steps

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=default_config)
    parser.add_argument("--set", action="append", default=[], help="key.path=value override")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    config.mesh.shape = (-1, 1)
    return args, config, statistics.median(time_steps(config, args.repeats)[1])
