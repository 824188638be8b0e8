"""Time the pieces of a NeCo step: backbone fwd/bwd, ROI-align, sorting, loss (issue 5 §5).

    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/neco_parts.py --variant dinov2_vits14_reg4 --batch 4 \
        --global-size 224 --local-size 98
    # GPU, paper shapes
    PYTHONPATH=. python benchmarks/neco_parts.py --batch 64 --global-size 518 --local-size 98

Each part is jitted on its own and timed as the median of `--repeats` calls after one
warm-up, with `block_until_ready`. Parts share the shapes of one step of
``configs/neco_dinov2.py`` (the flags override its fields): teacher forward (2B globals) and
student forward + backward (all crops), from `benchmarks/step_parts.py`; and the NeCo ops of
`method_parts` (the GPU suite's "method ops"): ROI-align of the 2·(V−1) pairs as
`neco.align_pairs` does it (gradient w.r.t. the student maps); the student's sort of the
pairs' similarity rows (forward + backward) and the teacher's (forward); the whole
`neco_loss` from token maps (align + references + both sorts + cross-entropy, forward +
backward). `--sort-row-chunk` sets `neco.sort_row_chunk`.
"""

from __future__ import annotations

import argparse
import json

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks.step_parts import Part, backbone_parts, median_ms
from benchmarks.train_step import load_config
from dense_jax.methods import neco
from dense_jax.models import build
from dense_jax.ops.sorting import soft_sort

METHOD_OPS = "neco_loss_fwd_bwd"  # the part that holds all NeCo-specific ops of a step


def method_parts(config) -> dict[str, Part]:
    """NeCo's own ops at the config's shapes, on projected token maps whose boxes cover their views."""
    c, n = config.crops, config.neco
    b, dim_out, refs = config.data.batch_size, n.out_dim, n.roi_size**2
    patch = build.backbone(config.model).patch_size
    n_views = c.n_global + c.n_local
    key = jax.random.key(0)
    hg, hl = c.global_size // patch, c.local_size // patch
    maps = jax.random.normal(key, (b, hg, hg, dim_out))
    t_maps = [maps * (1.0 + i) for i in range(c.n_global)]
    s_maps = t_maps + [jax.random.normal(key, (b, hl, hl, dim_out))] * c.n_local
    sizes = [c.global_size] * c.n_global + [c.local_size] * c.n_local
    gc = jnp.broadcast_to(
        jnp.array([[[0.0, 0.0, sizes[g], sizes[g]]] * n_views for g in range(c.n_global)]),
        (b, c.n_global, n_views, 4),
    )
    view_boxes = jnp.array([[[0.0, 0.0, s, s]] * c.n_global for s in sizes])
    allb = jnp.broadcast_to(view_boxes, (b, n_views, c.n_global, 4))
    pairs = neco.crop_pairs(c.n_global, n_views)

    def align_all(s_list):  # teacher maps are constants; the student's get gradients
        t, s = neco.align_pairs(pairs, t_maps, s_list, gc, allb, patch, n.roi_size)
        return t.sum() + s.sum()

    sims = jax.random.uniform(key, (len(pairs), b, refs, refs), minval=-1, maxval=1)
    chunk = n.sort_row_chunk or None
    weights = jax.random.uniform(key, sims.shape + (refs,))  # Σ P alone has zero gradient

    def sort(s, steepness):
        return soft_sort(s, n.network, n.relaxation, steepness, row_chunk=chunk)[1]

    def sort_student(s):
        return jnp.sum(sort(s, n.student_steepness) * weights)

    aux = neco.init_aux(config, None)

    def loss_only(s_list):
        return neco.neco_loss(t_maps, s_list, gc, allb, aux, key, config, patch)[0]

    return {
        "roi_align_pairs_fwd_bwd": Part(jax.jit(jax.grad(align_all)), (s_maps,)),
        "sort_student_pairs_fwd_bwd": Part(jax.jit(jax.grad(sort_student)), (sims,)),
        "sort_teacher_pairs_fwd": Part(jax.jit(lambda s: sort(s, n.teacher_steepness)), (sims,)),
        METHOD_OPS: Part(jax.jit(jax.grad(loss_only)), (s_maps,)),
    }


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

    config = load_config(
        "configs/neco_dinov2.py",
        [
            f"model.variant={args.variant}",
            f"model.dtype={args.dtype}",
            f"model.remat={args.global_size > 224}",
            f"data.batch_size={args.batch}",
            f"crops.global_size={args.global_size}",
            f"crops.local_size={args.local_size}",
            f"neco.sort_row_chunk={args.sort_row_chunk}",
        ],
    )
    key = jax.random.key(0)
    vit = build.backbone(config.model)
    params = nn.unbox(jax.jit(lambda k: build.init_variables(vit, k, (1, 98, 98, 3))[0])(key))
    parts = {**backbone_parts(config, params, key), **method_parts(config)}
    results = {
        "device": jax.devices()[0].device_kind,
        "variant": args.variant,
        "batch": args.batch,
        "global_size": args.global_size,
        "local_size": args.local_size,
        "dtype": args.dtype,
        "sort_row_chunk": args.sort_row_chunk,
        **{f"{name}_ms": median_ms(*part, repeats=args.repeats) for name, part in parts.items()},
    }
    print(json.dumps(results, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
