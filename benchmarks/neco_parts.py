"""Time the pieces of a NeCo step: backbone fwd/bwd, ROI-align, sorting, loss (issue 5 §5).

    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/neco_parts.py --variant dinov2_vits14_reg4 --batch 4 \
        --global-size 224 --local-size 98
    # GPU, paper shapes
    PYTHONPATH=. python benchmarks/neco_parts.py --batch 64 --global-size 518 --local-size 98

Each part is jitted on its own and timed as the median of `--repeats` calls after one
warm-up, with `block_until_ready`. Parts share the shapes of one step: 2 global + 4 local
crops per image, teacher on the globals, 10 (global, view) pairs, 49 references per image:
teacher forward (2B globals); student forward + backward (2B globals + 4B locals); ROI-align
of the 10 pairs as `neco.align_pairs` does it (gradient w.r.t. the student maps); the
student's sort of the 10 pairs' 10·B·49 similarity rows (forward + backward) and the
teacher's (forward); the whole `neco_loss` from token maps (align + references + both sorts
+ cross-entropy, forward + backward). `--sort-row-chunk` sets `neco.sort_row_chunk`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections as mlc

from configs.neco_dinov2 import neco_section
from dense_jax.methods import neco
from dense_jax.models import create
from dense_jax.ops.sorting import soft_sort


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="dinov2_vits14_reg4")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--global-size", type=int, default=224)
    parser.add_argument("--local-size", type=int, default=98)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sort-row-chunk", type=int, default=0, help="neco.sort_row_chunk (0: all rows)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    b, dim_out, refs = args.batch, 256, 49
    model = create(
        args.variant,
        dtype=args.dtype,
        drop_path_rate=0.1,
        interp_offset=0.1,
        interp_antialias=False,
        remat=args.global_size > 224,
    )
    patch = model.patch_size
    key = jax.random.key(0)
    g = jax.random.normal(key, (2 * b, args.global_size, args.global_size, 3))
    loc = jax.random.normal(key, (4 * b, args.local_size, args.local_size, 3))
    params = model.init(key, loc[:1])["params"]

    def backbone_loss(p):
        out_g = model.apply({"params": p}, g, train=True, rngs={"dropout": key})["patch"]
        out_l = model.apply({"params": p}, loc, train=True, rngs={"dropout": key})["patch"]
        return out_g.mean() + out_l.mean()

    teacher_fwd = jax.jit(lambda p: model.apply({"params": p}, g)["patch"])
    student_fwd_bwd = jax.jit(jax.grad(backbone_loss))

    # Projected token maps and box records of one step (every box covers its whole view).
    hg, hl = args.global_size // patch, args.local_size // patch
    maps = jax.random.normal(key, (b, hg, hg, dim_out))
    t_maps = [maps, maps * 0.5]
    s_maps = t_maps + [jax.random.normal(key, (b, hl, hl, dim_out))] * 4
    sizes = [args.global_size] * 2 + [args.local_size] * 4
    gc = jnp.broadcast_to(jnp.array([[[0.0, 0.0, sizes[c], sizes[c]]] * 6 for c in range(2)]), (b, 2, 6, 4))
    allb = jnp.broadcast_to(jnp.array([[[0.0, 0.0, s, s]] * 2 for s in sizes]), (b, 6, 2, 4))
    pairs = neco.crop_pairs(2, 6)

    def align_all(s_list):  # teacher maps are constants; the student's get gradients
        t, s = neco.align_pairs(pairs, t_maps, s_list, gc, allb, patch, 7)
        return t.sum() + s.sum()

    align_fwd_bwd = jax.jit(jax.grad(align_all))

    sims = jax.random.uniform(key, (len(pairs), b, refs, refs), minval=-1, maxval=1)
    chunk = args.sort_row_chunk or None
    weights = jax.random.uniform(key, sims.shape + (refs,))  # Σ P alone has zero gradient

    def sort_student(s):
        return jnp.sum(soft_sort(s, "bitonic", "cauchy", 100.0, row_chunk=chunk)[1] * weights)

    sort_fwd_bwd = jax.jit(jax.grad(sort_student))
    sort_teacher = jax.jit(lambda s: soft_sort(s, "bitonic", "cauchy", 100.0, row_chunk=chunk)[1])

    config = mlc.ConfigDict(dict(neco=neco_section(), crops=dict(n_global=2)))
    config.neco.sort_row_chunk = args.sort_row_chunk
    aux = neco.init_aux(config, None)

    def loss_only(s_list):
        return neco.neco_loss(t_maps, s_list, gc, allb, aux, key, config, patch)[0]

    loss_fwd_bwd = jax.jit(jax.grad(loss_only))

    r = args.repeats
    results = {
        "device": jax.devices()[0].device_kind,
        "variant": args.variant,
        "batch": b,
        "global_size": args.global_size,
        "local_size": args.local_size,
        "dtype": args.dtype,
        "sort_row_chunk": args.sort_row_chunk,
        "teacher_forward_ms": _time(teacher_fwd, params, repeats=r),
        "student_forward_backward_ms": _time(student_fwd_bwd, params, repeats=r),
        "roi_align_10_pairs_fwd_bwd_ms": _time(align_fwd_bwd, s_maps, repeats=r),
        "sort_student_10_pairs_fwd_bwd_ms": _time(sort_fwd_bwd, sims, repeats=r),
        "sort_teacher_10_pairs_fwd_ms": _time(sort_teacher, sims, repeats=r),
        "neco_loss_fwd_bwd_ms": _time(loss_fwd_bwd, s_maps, repeats=r),
    }
    print(json.dumps(results, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
