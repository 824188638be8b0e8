"""CrIBo bank search throughput on this machine: the sharded, chunked `memory_bank.search`
(cribo.md §5) against a plain dense-matrix arg-max of the same problem.

    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/cribo_search.py

A random bank of S images × K objects × D (both views, all slots live) on a 1-device mesh and
Q = B·K queries per view. ``chunked``: the jitted `memory_bank.search` (``chunk`` image
columns per scan step, running max, matched entries of both banks fetched); ``dense``: the
(2, Q, S·K) cosine matrix, its arg-max and the same gathers. The two are timed alternately in
one run (median of ``--repeats`` calls each, compilation excluded) so that their ratio holds
under a shared machine's load; the load average is printed. Throughput = objects × bank rows
per second (2·Q·S·K per call). Results: benchmarks/cribo_cpu.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from dense_jax.core import sharding as shd
from dense_jax.ops import memory_bank as mb
from dense_jax.ops.clustering import unit


def dense_search(bank, queries):
    """The reference's way: normalise the whole bank, one (2, Q, S·K) similarity, arg-max."""
    objects = bank["objects"]
    rows = objects.reshape(2, -1, objects.shape[-1])
    sims = jnp.einsum("vqd,vsd->vqs", unit(queries), unit(rows))
    index = jnp.argmax(sims, axis=-1)
    views = jnp.arange(2)[:, None]
    return index, rows[views, index], rows[1 - views, index]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    mesh = shd.make_mesh((1, 1))
    bank = nn.unbox(mb.init(args.images, args.batch, args.k, args.dim, "reference", jax.random.key(0)))
    queries = jax.random.normal(jax.random.key(1), (2, args.batch * args.k, args.dim))
    chunked = jax.jit(lambda b, q: mb.search(b, q, num_images=args.images, mesh=mesh, chunk=args.chunk))
    dense = jax.jit(dense_search)
    same = bool(jnp.all(chunked(bank, queries).index == dense(bank, queries)[0]))
    times = {"chunked": [], "dense": []}
    for _ in range(args.repeats):
        for name, fn in (("chunked", chunked), ("dense", dense)):
            start = time.perf_counter()
            jax.block_until_ready(fn(bank, queries))
            times[name].append(time.perf_counter() - start)
    pairs = 2 * args.batch * args.k * args.images * args.k
    print(
        f"bank {args.images} images x {args.k} objects x {args.dim}, {args.batch * args.k} queries per view,"
    )
    print(f"chunk {args.chunk} columns; same arg-max: {same}; load average {os.getloadavg()}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:8s} median {t * 1e3:8.1f} ms  {pairs / t / 1e9:6.2f} G objects x rows / s")
    ratio = statistics.median(times["chunked"]) / statistics.median(times["dense"])
    print(f"chunked / dense time: {ratio:.2f}")


if __name__ == "__main__":
    main()
