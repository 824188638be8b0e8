"""Our `soft_sort` vs diffsort 0.2.0's `DiffSortNet` on CPU at NeCo shapes (issue 5 §5).

    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/sorting_cpu.py --batches 16 64 --row-chunks 0 49 98 \
        --out /tmp/sorting_cpu.json

Rows = B·49 of length n = 49 (one pair's similarity rows), bitonic + cauchy, β = 100, fp32.
Ours runs once per `--row-chunks` value (0: all rows at once; k: `soft_sort(row_chunk=k)`).
Both sides compute the scalar ``Σ w1·x_sorted + Σ w2·P`` (fixed random weights: Σ P alone
is constant, its gradient 0) and its gradient w.r.t. ``x``: ours as one jitted
``jax.value_and_grad``, diffsort as forward + ``backward()``. Threads: by default torch gets
one per core, as XLA's CPU backend uses; ``--threads 1`` makes both single-threaded (on a
shared, oversubscribed CPU torch's 2-thread OpenMP runs slow down ~9×). Forward-only
(the teacher's sort) is timed too. Each time is the median of `--repeats` calls after
`--warmup` rounds, the functions called in turn in every round (`_interleaved_median_ms`);
the two gradients are compared as a check that the work is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np


def _interleaved_median_ms(fns: dict, warmup: int, repeats: int) -> dict:
    """Median ms of each function; every repeat calls all of them in turn, so that they
    share the same background load (the CPU may be shared)."""
    times = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--n", type=int, default=49)
    parser.add_argument("--network", default="bitonic")
    parser.add_argument("--relaxation", default="cauchy")
    parser.add_argument("--steepness", type=float, default=100.0)
    parser.add_argument("--row-chunks", type=int, nargs="+", default=[0, 49, 98])
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="torch threads; 1 also makes XLA single-threaded, else XLA uses every core",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.threads == 1:  # before jax is imported
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
            " intra_op_parallelism_threads=1"
        ).strip()

    import diffsort
    import jax
    import jax.numpy as jnp
    import torch

    from dense_jax.ops.sorting import soft_sort

    torch.set_num_threads(args.threads)
    n = args.n
    sort_kw = dict(network=args.network, relaxation=args.relaxation, steepness=args.steepness)

    def ours(row_chunk: int):
        """(forward+backward, forward) jitted functions of our sort."""
        kw = dict(sort_kw, row_chunk=row_chunk or None)

        def objective(x, w1, w2):
            x_sorted, perm = soft_sort(x, **kw)
            return jnp.sum(w1 * x_sorted) + jnp.sum(w2 * perm)

        return jax.jit(jax.value_and_grad(objective)), jax.jit(lambda x: soft_sort(x, **kw))

    sorter = diffsort.DiffSortNet(args.network, n, steepness=args.steepness, distribution=args.relaxation)

    results = {
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
        "jax": jax.__version__,
        "torch": torch.__version__,
        "diffsort": "0.2.0",
        "threads": args.threads,
        "n": n,
        "network": args.network,
        "relaxation": args.relaxation,
        "steepness": args.steepness,
        "repeats": args.repeats,
        "loadavg_start": os.getloadavg(),
        "rows": [],
    }
    for batch in args.batches:
        rows = batch * n
        rng = np.random.default_rng(0)
        x, w1, w2 = (
            rng.uniform(-1, 1, shape).astype(np.float32) for shape in ((rows, n), (rows, n), (rows, n, n))
        )
        xj, w1j, w2j = map(jnp.asarray, (x, w1, w2))
        xt, w1t, w2t = map(torch.from_numpy, (x, w1, w2))

        def torch_fwd_bwd():
            xg = xt.clone().requires_grad_(True)
            x_sorted, perm = sorter(xg)
            ((w1t * x_sorted).sum() + (w2t * perm).sum()).backward()
            return xg.grad

        def torch_fwd():
            with torch.no_grad():
                return sorter(xt)

        grad_torch = torch_fwd_bwd().numpy()
        fns = {"diffsort_fwd_bwd": torch_fwd_bwd, "diffsort_fwd": torch_fwd}
        entry = {"batch": batch, "rows": rows, "grad_max_abs": float(np.abs(grad_torch).max())}
        for chunk in args.row_chunks:
            fwd_bwd, fwd = ours(chunk)
            grad_jax = np.asarray(fwd_bwd(xj, w1j, w2j)[1])
            entry[f"grad_max_abs_diff_chunk{chunk}"] = float(np.abs(grad_jax - grad_torch).max())
            fns[f"ours_chunk{chunk}_fwd_bwd"] = lambda f=fwd_bwd: jax.block_until_ready(f(xj, w1j, w2j))
            fns[f"ours_chunk{chunk}_fwd"] = lambda f=fwd: jax.block_until_ready(f(xj))
        ms = _interleaved_median_ms(fns, args.warmup, args.repeats)
        entry.update({f"{name}_ms": t for name, t in ms.items()})
        for chunk in args.row_chunks:
            for part in ("fwd_bwd", "fwd"):
                ours_ms = ms[f"ours_chunk{chunk}_{part}"]
                entry[f"speedup_chunk{chunk}_{part}"] = ms[f"diffsort_{part}"] / ours_ms
        results["rows"].append(entry)
        print(json.dumps(entry), flush=True)
    results["loadavg_end"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
