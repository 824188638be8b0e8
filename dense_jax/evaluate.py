"""Evaluation CLI: every dense protocol of the papers on a frozen backbone (evaluation.md).

    python -m dense_jax.evaluate --config=configs/eval/<protocol>_<dataset>.py[:demo] \\
        --workdir=DIR [--config.weights=PATH]

``--config.weights``: any weight file ``dense_jax.models.load`` reads, or a dense_jax training
workdir (its latest teacher backbone); empty = random init. The run prints a table, writes
``DIR/results.json`` and PNG panels. The protocols themselves are
`dense_jax.eval.protocols.run_protocols`, which the trainer's periodic evaluations share.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags


def load_backbone(config):
    """``(backbone_fn, params, description, model_config)`` of ``config.weights``: a training
    workdir (read with the trainer's checkpoint reader), a weight file, or random init."""
    from dense_jax.eval import backbones

    weights = os.path.expanduser(config.weights)
    if weights and backbones.is_run(weights):
        from dense_jax.train import restore

        return backbones.from_run(weights, config, restore.teacher_backbone)
    return backbones.load(config)


def evaluate(config, workdir: str, log: Callable[[str], None] = print) -> dict:
    """Loads ``config.weights``, runs the protocols, writes ``workdir/results.json`` and PNGs,
    logs the table; returns the results."""
    from dense_jax.eval import report
    from dense_jax.eval.protocols import run_protocols
    from dense_jax.train.loop import fit

    start = time.perf_counter()
    backbone_fn, params, description, model_config = load_backbone(config)
    log(f"backbone: {description}")
    results = run_protocols(backbone_fn, params, config, workdir, log=log, fit=fit, model_config=model_config)
    os.makedirs(workdir, exist_ok=True)
    report.write_json(
        os.path.join(workdir, "results.json"),
        {
            "backbone": description,
            "config": config.to_dict(),
            "results": results,
            "total_time_s": time.perf_counter() - start,
        },
    )
    log(report.table(results))
    log(f"wrote {os.path.join(workdir, 'results.json')}")
    return results


def main(config, workdir: str) -> None:
    logging.set_verbosity(logging.WARNING)  # JAX's backend probing and orbax INFO lines
    from dense_jax.core import errors

    try:
        evaluate(config, workdir, log=lambda s: print(s, flush=True))
    except errors.REPORTED as err:  # one clear line, no traceback
        sys.exit(errors.one_line(err))


def run() -> None:
    """Console entry point (``dense-jax-evaluate``)."""
    config = config_flags.DEFINE_config_file(
        "config", None, "Evaluation config file[:variant].", lock_config=True
    )
    workdir = flags.DEFINE_string("workdir", None, "Directory for results.json and PNGs.")
    flags.mark_flags_as_required(["config", "workdir"])
    from dense_jax.core import errors

    app.run(lambda argv: main(config.value, workdir.value), flags_parser=errors.parse_flags)


if __name__ == "__main__":
    run()
