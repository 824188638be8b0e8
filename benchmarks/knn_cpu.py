"""Exact k-NN throughput of `dense_jax.ops.knn` (evaluation.md §1 "JAX port") on this machine.

    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/knn_cpu.py --out=knn_cpu.json

For each memory size M: random queries (Q, D) and unit-norm memory rows (M, D) in fp32, the
jitted ``knn(..., metric="dot")`` (exact, ``Precision.HIGHEST``, default chunk and group size)
timed with ``block_until_ready``: the median of ``--repeats`` calls after one warm-up call
(compilation excluded). Reports seconds, queries × memory / s and the matmul's GFLOP/s
(2·Q·M·D per call), next to the similarity matmul alone (``jnp.dot`` of the same shapes, the
lower bound). Results: benchmarks/knn_cpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from dense_jax.ops.knn import knn


def median_time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--memory", type=int, nargs="+", default=[65536, 262144])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--chunk", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    queries = jnp.asarray(rng.normal(size=(args.queries, args.dim)), jnp.float32)
    search = jax.jit(lambda q, m: knn(q, m, args.k, args.chunk, metric="dot"))
    matmul = jax.jit(lambda q, m: jnp.dot(q, m.T, precision=jax.lax.Precision.HIGHEST))
    rows = []
    for m in args.memory:
        memory = rng.normal(size=(m, args.dim)).astype(np.float32)
        memory = jnp.asarray(memory / np.linalg.norm(memory, axis=1, keepdims=True))
        t_knn = median_time(search, queries, memory, repeats=args.repeats)
        t_mm = median_time(matmul, queries, memory, repeats=args.repeats)
        flop = 2.0 * args.queries * m * args.dim
        rows.append(
            dict(
                queries=args.queries,
                memory=m,
                dim=args.dim,
                k=args.k,
                knn_s=t_knn,
                pairs_per_s=args.queries * m / t_knn,
                knn_gflops=flop / t_knn / 1e9,
                matmul_s=t_mm,
                matmul_gflops=flop / t_mm / 1e9,
            )
        )
        print(
            f"Q={args.queries} M={m} D={args.dim} k={args.k}: knn {t_knn:.3f} s "
            f"({rows[-1]['pairs_per_s']:.3g} pairs/s, {rows[-1]['knn_gflops']:.1f} GFLOP/s), "
            f"matmul alone {t_mm:.3f} s ({rows[-1]['matmul_gflops']:.1f} GFLOP/s)",
            flush=True,
        )
    info = dict(
        device=str(jax.devices()[0]),
        cpu=cpu_name(),
        cores=os.cpu_count(),
        load_average=os.getloadavg(),
        jax=jax.__version__,
        chunk=args.chunk,
        rows=rows,
    )
    print(json.dumps({k: v for k, v in info.items() if k != "rows"}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
