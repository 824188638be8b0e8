"""Evaluations declared in the training config, each at its own cadence.

``config.evals.<name> = {config: "configs/eval/<protocol>_<dataset>.py[:variants]", every: N}``
runs that evaluation config's protocols on the backbone the run is scored by (the EMA
teacher's, or the student's without a teacher) every N steps (0: only at the end) and at the
last step, inside the training mesh, on the parameters where the trainer keeps them (sharded
on the devices; nothing is gathered to one host). Scores go to ``metrics.jsonl`` as
``eval/<name>/<protocol>/<score>``; PNGs under ``workdir/eval/<name>/step_<n>``.
"""

from __future__ import annotations

import dataclasses
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

    def due(self, step: int, total: int) -> bool:
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
        if set(entry) != {"config", "every"}:
            raise ValueError(
                f"config.evals.{name} needs exactly the keys 'config' (an evaluation "
                f"config file[:variants]) and 'every' (steps; 0 = at the end), got {sorted(entry)}"
            )
        evals.append(
            PeriodicEval(
                name, int(entry["every"]), config_from_file(entry["config"]), train_config, workdir, fit
            )
        )
    return evals
