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
    from dense_jax.core.sharding import make_mesh

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


def config_from_file(spec: str):
    """``get_config(arg)`` of a config file given as ``path[:arg]`` (as ``--config`` takes it)."""
    import importlib.util

    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    module_spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def training_hook(train_config, workdir: str) -> Callable | None:
    """The trainer's periodic evaluation (``config.eval``): runs the protocols of the evaluation
    config file ``config.eval.config`` on the EMA teacher backbone; ``None`` when unset.
    Returns ``hook(teacher_backbone_params, step) -> {"eval/<protocol>/<score>": value}``."""
    if not train_config.eval.config:
        return None
    import jax
    from dense_jax.eval import report
    from dense_jax.models.build import backbone

    eval_config = config_from_file(train_config.eval.config)
    model = backbone(train_config.model).clone(
        drop_path_rate=0.0, dtype=eval_config.model.dtype, n_last_blocks=eval_config.model.n_last_blocks)

    def backbone_fn(params, images):
        return model.apply({"params": params}, images)

    def hook(params, step: int) -> dict:
        out = os.path.join(workdir, "eval", f"step_{step}")
        results = run_protocols(backbone_fn, jax.device_get(params), eval_config, out)
        return {f"eval/{k}": v for k, v in report.scalars(results).items()}

    return hook


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


def main(config, workdir: str) -> None:
    from dense_jax.data.sources import DatasetNotFoundError

    try:
        evaluate(config, workdir, log=lambda s: print(s, flush=True))
    except (DatasetNotFoundError, FileNotFoundError) as err:  # one clear line, no traceback
        sys.exit(f"error: {err}")


def run() -> None:
    """Console entry point. The flags are defined here, not at import, so that the training
    CLI can import this module for its evaluation hook."""
    config = config_flags.DEFINE_config_file("config", None, "Evaluation config file[:variant].",
                                             lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, "Directory for results.json and PNGs.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(lambda argv: main(config.value, workdir.value))


if __name__ == "__main__":
    run()
