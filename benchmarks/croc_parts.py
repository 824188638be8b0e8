"""The CrOC clustering's share of a training step (issue 13 item 6; croc.md §8: 8 % in the reference).

    PYTHONPATH=. python benchmarks/croc_parts.py --set data.batch_size=4 --set croc.norm_group=4
    # GPU, paper config (ViT-S/16, batch 256, groups of 128)
    PYTHONPATH=. python benchmarks/croc_parts.py --set model.dtype=bfloat16 --out=croc_parts.json

Times, on the synthetic batch of `benchmarks/train_step.py` (same config loading and
``--set`` overrides, default ``configs/croc_coco.py``): the whole jitted train step
(`train_step.time_steps`: the trainer's own state and step, data-parallel over the local
devices), and the clustering alone:
`croc_cluster` on features of the step's shapes (S = B·H samples of 2N tokens, the last
block's per-head width), jitted on its own. Each is the median of ``--repeats`` calls after
the first (compiling) one, with ``block_until_ready``. share = clustering / step.
"""

from __future__ import annotations

import jax

from benchmarks.step_parts import Part, median_ms, parts_cli
from benchmarks.train_step import emit
from dense_jax.methods import croc
from dense_jax.models import build

METHOD_OPS = "clustering"  # the part that holds CrOC's own ops of a step


def method_parts(config) -> dict[str, Part]:
    """`croc.cluster_views` on random teacher outputs of the step's shapes (the GPU suite's
    "method ops")."""
    vit = build.backbone(config.model)
    b, grid = config.data.batch_size, config.crops.global_size // vit.patch_size
    n, heads = grid * grid, vit.num_heads
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    feats = jax.random.normal(k1, (2 * b, heads, 1 + n, vit.embed_dim // heads))
    positions = config.crops.global_size * jax.random.uniform(k2, (b, 2, n, 2))
    fn = jax.jit(lambda f, p, k: croc.cluster_views({config.croc.features: f}, p, k, config.croc))
    return {METHOD_OPS: Part(fn, (feats, positions, k3))}


def main() -> None:
    args, config, step_s = parts_cli("configs/croc_coco.py")
    cluster_s = median_ms(*method_parts(config)[METHOD_OPS], repeats=args.repeats) / 1e3
    record = {
        "config": args.config,
        "overrides": args.set,
        "device": jax.devices()[0].device_kind,
        "n_devices": jax.device_count(),
        "batch": config.data.batch_size,
        "k_start": config.croc.k_start,
        "step_ms": round(step_s * 1e3, 1),
        "clustering_ms": round(cluster_s * 1e3, 1),
        "clustering_share": round(cluster_s / step_s, 4),
    }
    emit(record, args.out)


if __name__ == "__main__":
    main()
