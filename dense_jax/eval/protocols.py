"""Run the evaluation protocols of an evaluation config on a frozen backbone (evaluation.md).

`run_protocols` is what the evaluation CLI and the trainer's periodic evaluations
(`dense_jax.eval.periodic`) share. Parameters may already live on the devices, sharded as the
trainer keeps them: they are used in place, never fetched to the host.
"""

from __future__ import annotations

import importlib
import time
from typing import Any, Callable

import jax
from jax.sharding import Mesh

from dense_jax.core.sharding import make_mesh
from dense_jax.eval.features import EvalContext

PROTOCOLS = {  # protocol name -> driver module (each exposes run(ctx) -> dict)
    "linear": "dense_jax.eval.linear",
    "kmeans": "dense_jax.eval.clustering",
    "hbird": "dense_jax.eval.retrieval",
    "davis": "dense_jax.eval.video",
    "cbfe": "dense_jax.eval.foreground",
    "croc_clusters": "dense_jax.eval.croc_clusters",
    "cribo_matches": "dense_jax.eval.cribo_matches",
    "pca": "dense_jax.eval.pca",
}


def run_protocols(
    backbone_fn: Callable,
    params: Any,
    config,
    workdir: str | None = None,
    log: Callable[[str], None] | None = None,
    *,
    mesh: Mesh | None = None,
    fit: Callable | None = None,
    model_config: dict | None = None,
) -> dict:
    """Runs ``config.protocols`` on a frozen backbone; returns ``{protocol: result}``.

    ``backbone_fn(params, images (B, S, S, 3)) -> dict`` is the ViT's output dict (``patch``,
    ``last_blocks``, ``attn_cls``). Each result holds ``summary`` (score name -> fraction),
    ``time_s`` and protocol details; ``dense_jax.eval.report.scalars`` flattens the summaries.
    PNGs are written under ``workdir`` when given. ``mesh``: the mesh to run in (default one
    from ``config.mesh.shape``); ``fit``/``model_config``: see `EvalContext`.
    """
    unknown = [p for p in config.protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; known: {', '.join(PROTOCOLS)}")
    ctx = EvalContext(
        backbone_fn,
        params,
        config,
        mesh or make_mesh(config.mesh.shape),
        workdir,
        fit=fit,
        model_config=model_config,
    )
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
