"""Evaluation CLI: every dense protocol of the papers on a frozen backbone (evaluation.md).

    python -m dense_jax.evaluate --config=configs/eval/<protocol>_<dataset>.py[:demo] \\
        --workdir=DIR [--config.weights=PATH]

``--config.weights``: any weight file ``dense_jax.models.load`` reads, or a dense_jax training
workdir (its latest teacher backbone); empty = random init. The run prints a table, writes
``DIR/results.json`` and PNG panels. `run_protocols` is the same thing as a function, for the
trainer's periodic evaluation hook::

    results = run_protocols(backbone_fn, params, eval_config)    # {protocol: {"summary": ...}}
"""
from __future__ import annotations

import importlib
import os
import sys
import time
from typing import Any, Callable

from absl import app, flags
from ml_collections import config_flags

PROTOCOLS = {  # protocol name -> driver module (each exposes run(ctx) -> dict)
    "linear": "dense_jax.eval.linear",
    "kmeans": "dense_jax.eval.clustering",
    "hbird": "dense_jax.eval.retrieval",
    "davis": "dense_jax.eval.video",
    "cbfe": "dense_jax.eval.foreground",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Evaluation config file[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for results.json and PNGs.")


def run_protocols(backbone_fn: Callable, params: Any, config, workdir: str | None = None,
                  log: Callable[[str], None] | None = None) -> dict:
    """Runs ``config.protocols`` on a frozen backbone; returns ``{protocol: result}``.

    ``backbone_fn(params, images (B, S, S, 3)) -> dict`` is the ViT's output dict (``patch``,
    ``last_blocks``, ``attn_cls``). Each result holds ``summary`` (score name -> fraction),
    ``time_s`` and protocol details; ``dense_jax.eval.report.scalars`` flattens the summaries.
    PNGs are written under ``workdir`` when given.
    """
    import jax
    from dense_jax.eval.features import EvalContext
    from dense_jax.train.sharding import make_mesh

    unknown = [p for p in config.protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; known: {', '.join(PROTOCOLS)}")
    ctx = EvalContext(backbone_fn, params, config, make_mesh(config.mesh.shape), workdir)
    results = {}
    with jax.set_mesh(ctx.mesh):
        for protocol in config.protocols:
            start = time.perf_counter()
            result = importlib.import_module(PROTOCOLS[protocol]).run(ctx)
            result["time_s"] = time.perf_counter() - start
            results[protocol] = result
            if log:
                log(f"{protocol}: {result['summary']} ({result['time_s']:.1f} s)")
    return results


def evaluate(config, workdir: str, log: Callable[[str], None] = print) -> dict:
    """Loads ``config.weights``, runs the protocols, writes ``workdir/results.json`` and PNGs,
    logs the table; returns the results."""
    from dense_jax.eval import backbones, report

    start = time.perf_counter()
    backbone_fn, params, description = backbones.load(config)
    log(f"backbone: {description}")
    results = run_protocols(backbone_fn, params, config, workdir, log=log)
    os.makedirs(workdir, exist_ok=True)
    report.write_json(os.path.join(workdir, "results.json"), {
        "backbone": description, "config": config.to_dict(), "results": results,
        "total_time_s": time.perf_counter() - start})
    log(report.table(results))
    log(f"wrote {os.path.join(workdir, 'results.json')}")
    return results


def main(argv) -> None:
    del argv
    from dense_jax.data.sources import DatasetNotFoundError

    try:
        evaluate(_CONFIG.value, _WORKDIR.value, log=lambda s: print(s, flush=True))
    except (DatasetNotFoundError, FileNotFoundError) as err:  # one clear line, no traceback
        sys.exit(f"error: {err}")


def run() -> None:
    """Console entry point."""
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)


if __name__ == "__main__":
    run()
