"""Evaluations declared in the training config, each at its own cadence.

``config.evals.<name> = {config: "configs/eval/<protocol>_<dataset>.py[:variants]", every: N}``
runs that evaluation config's protocols on the backbone the run is scored by (the EMA
teacher's, or the student's without a teacher) every N steps (0: only at the end) and at the
last step, inside the training mesh, on the parameters where the trainer keeps them (sharded
on the devices; nothing is gathered to one host). An optional ``at_start: True`` also scores
the initial backbone at step 0, so that `before_after` can show what training changed.
Scores go to ``metrics.jsonl`` as ``eval/<name>/<protocol>/<score>``; PNGs under
``workdir/eval/<name>/step_<n>``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import ml_collections as mlc
from jax.sharding import Mesh

from dense_jax.core.config_files import config_from_file
from dense_jax.eval import report
from dense_jax.eval.protocols import run_protocols
from dense_jax.models.build import backbone


@dataclasses.dataclass
class PeriodicEval:
    """One ``config.evals`` entry, ready to run: ``due(step, total)`` and ``run(params, step)``."""

    name: str
    every: int
    eval_config: mlc.ConfigDict
    train_config: mlc.ConfigDict
    workdir: str
    fit: Callable | None = None
    at_start: bool = False

    def due(self, step: int, total: int) -> bool:
        if step == 0:
            return self.at_start
        return step == total or (self.every > 0 and step % self.every == 0)

    def run(self, params: Any, step: int, mesh: Mesh) -> dict[str, float]:
        model = backbone(self.train_config.model).clone(
            drop_path_rate=0.0,
            dtype=self.eval_config.model.dtype,
            n_last_blocks=self.eval_config.model.n_last_blocks,
        )

        def backbone_fn(p, images):
            return model.apply({"params": p}, images)

        model_config = {
            **self.train_config.model.to_dict(),
            "drop_path_rate": 0.0,
            "dtype": self.eval_config.model.dtype,
            "n_last_blocks": self.eval_config.model.n_last_blocks,
        }
        out = os.path.join(self.workdir, "eval", self.name, f"step_{step}")
        results = run_protocols(
            backbone_fn, params, self.eval_config, out, mesh=mesh, fit=self.fit, model_config=model_config
        )
        return {f"eval/{self.name}/{k}": v for k, v in report.scalars(results).items()}


def from_config(
    train_config: mlc.ConfigDict, workdir: str, fit: Callable | None = None
) -> list[PeriodicEval]:
    """The run's evaluations, in name order (their configs are loaded now, so a bad path
    fails before training starts)."""
    evals = []
    for name in sorted(train_config.evals):
        entry = train_config.evals[name]
        if not {"config", "every"} <= set(entry) <= {"config", "every", "at_start"}:
            raise ValueError(
                f"config.evals.{name} needs the keys 'config' (an evaluation config "
                f"file[:variants]) and 'every' (steps; 0 = at the end), optionally 'at_start' "
                f"(also score the initial backbone), got {sorted(entry)}"
            )
        evals.append(
            PeriodicEval(
                name,
                int(entry["every"]),
                config_from_file(entry["config"]),
                train_config,
                workdir,
                fit,
                "at_start" in entry and bool(entry["at_start"]),
            )
        )
    return evals


def first_and_last(metrics_path: str) -> tuple[int, int, dict[str, float], dict[str, float]] | None:
    """(first step, last step, its ``eval/...`` scores, its scores) over the steps that logged
    evaluations in ``metrics.jsonl`` (resumes included; names without the ``eval/`` prefix);
    None when no evaluation was logged."""
    by_step: dict[int, dict[str, float]] = {}
    with open(metrics_path) as f:
        for line in f:
            record = json.loads(line)
            scores = {k[len("eval/") :]: v for k, v in record.items() if k.startswith("eval/")}
            if scores:
                by_step.setdefault(int(record["step"]), {}).update(scores)
    if not by_step:
        return None
    start, end = min(by_step), max(by_step)
    return start, end, by_step[start], by_step[end]


def before_after(metrics_path: str) -> str:
    """A table of every ``eval/...`` score (x100) at the first and at the last step that
    logged evaluations (`first_and_last`), with the change; "-" where a score was not logged
    at that step; one column when a single step logged any; "" when no evaluation was logged."""
    scores = first_and_last(metrics_path)
    if scores is None:
        return ""
    start, end, before, after = scores
    names = sorted(set(before) | set(after))
    width = max(len(n) for n in names)
    if start == end:
        head = f"{'score'.ljust(width)}  {f'step {end}':>10}"
        rows = [f"{n.ljust(width)}  {100 * after[n]:10.2f}" for n in names]
        return "\n".join([head, "-" * len(head), *rows])

    def cell(value):
        return f"{100 * value:10.2f}" if value is not None else f"{'-':>10}"

    head = f"{'score'.ljust(width)}  {f'step {start}':>10}  {f'step {end}':>10}  {'change':>7}"
    lines = [head, "-" * len(head)]
    for name in names:
        a, b = before.get(name), after.get(name)
        change = f"{100 * (b - a):+7.2f}" if a is not None and b is not None else f"{'-':>7}"
        lines.append(f"{name.ljust(width)}  {cell(a)}  {cell(b)}  {change}")
    return "\n".join(lines)
