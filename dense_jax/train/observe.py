"""What a run reports about its step before stepping, and the profiler window around chosen
steps (examples-to-follow.md: big_vision's compile note and profiler window, MaxText's memory
analysis before step 1).

`compile_step` compiles the jitted step ahead of time on the first batch; ``jax.jit`` reuses
that executable for the calls that follow, so the report costs no second compilation (only
jit's own lowering, ~0.5 s once per run for the NeCo demo step on a CPU). Its
line says how long XLA took, the parameters per part of the student and what the step needs
per device (XLA's memory analysis: arguments + outputs − donated + temporaries), before a
step that would not fit has run out of memory. `ProfileWindow` traces the steps
``[start, stop)`` of ``train.profile_steps`` into ``<workdir>/profile`` (TensorBoard's or
Perfetto's profile viewer reads it).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax


def step_memory_bytes(compiled) -> int | None:
    """Per-device bytes a compiled program needs: arguments + outputs − aliased (donated) +
    temporaries; None where the backend gives no memory analysis."""
    try:
        m = compiled.memory_analysis()
        return int(
            m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
        )
    except (AttributeError, NotImplementedError, TypeError):
        return None


def parameter_counts(params: dict) -> dict[str, int]:
    """Number of parameters in each top-level part of ``params`` (``backbone``, ``head``, ...)."""
    return {part: sum(leaf.size for leaf in jax.tree.leaves(tree)) for part, tree in params.items()}


def compile_step(step: Callable, state: Any, batch: dict, rng: jax.Array) -> dict:
    """Compile `step` for these arguments now and report it: ``compile_s``, ``params``
    (`parameter_counts` of the student) and ``step_memory_bytes`` (per device, when known)."""
    start = time.perf_counter()
    compiled = step.lower(state, batch, rng).compile()
    report = {"compile_s": round(time.perf_counter() - start, 2), "params": parameter_counts(state.params)}
    memory = step_memory_bytes(compiled)
    if memory is not None:
        report["step_memory_bytes"] = memory
    return report


def describe(report: dict) -> str:
    """One line for the user: ``step compiled in 12.3 s; params backbone 21.7M, head 5.1M;
    step memory per device 2.10 GiB``."""
    params = ", ".join(
        f"{part} {_scaled(count, 1000, ('', 'k', 'M', 'G'))}" for part, count in report["params"].items()
    )
    line = f"step compiled in {report['compile_s']:.1f} s; params {params}"
    if "step_memory_bytes" in report:
        memory = _scaled(report["step_memory_bytes"], 1024, (" B", " KiB", " MiB", " GiB"))
        line += f"; step memory per device {memory}"
    return line


def _scaled(value: float, base: int, units: tuple[str, ...]) -> str:
    """`value` in the largest of `units` (successive powers of `base`) that keeps it >= 1."""
    power = 0
    while value >= base and power < len(units) - 1:
        value, power = value / base, power + 1
    return f"{value:.1f}{units[power]}" if power else f"{value:.0f}{units[0]}"


class ProfileWindow:
    """A jax.profiler trace of the steps ``[start, stop)`` (``train.profile_steps``; equal
    bounds: none) into `directory`. The trace stops after the last traced step's results
    are ready, so that it holds whole steps despite asynchronous dispatch."""

    def __init__(self, steps: tuple[int, int], directory: str):
        self.start, self.stop = steps
        self.directory = directory
        self.active = False

    def before(self, step: int) -> None:
        """Call before running `step` (0-based)."""
        if self.start <= step < self.stop and not self.active:
            os.makedirs(self.directory, exist_ok=True)
            jax.profiler.start_trace(self.directory)
            self.active = True

    def after(self, done: int, state: Any) -> None:
        """Call after dispatching the step that leaves `done` steps done."""
        if self.active and done >= self.stop:
            jax.block_until_ready(state)
            self.close()

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
