"""CrIBo's own parts as a share of a training step (issue 14 item 6; cribo.md §8: clustering
7.6 % and NN retrieval + bank update 4.4 % of the step in the reference).

    PYTHONPATH=. python benchmarks/cribo_parts.py --set data.batch_size=8 --set cribo.group=8
    # GPU, paper config (ViT-S/16, batch 256, K = 64, groups of 32, S = 25,000)
    PYTHONPATH=. python benchmarks/cribo_parts.py --set model.dtype=bfloat16 --out=cribo_parts.json

Times, on the synthetic batch of `benchmarks/train_step.py` (same config loading and ``--set``
overrides, default ``configs/cribo_coco.py``): the whole jitted train step (the trainer's own
state and step, data-parallel over the local devices), the clustering alone
(`cribo.cluster` on random tokens of the step's shapes), and the bank part alone (search of the
step's objects, cycle check and enqueue: `cribo.bootstrap` + `memory_bank.enqueue` on the
trainer's sharded bank layout). Medians of ``--repeats`` calls after the compiling one.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from benchmarks.step_parts import Part, median_ms, parts_cli
from benchmarks.train_step import emit
from dense_jax.core import sharding as shd
from dense_jax.methods import cribo
from dense_jax.models import build
from dense_jax.ops import memory_bank
from dense_jax.ops.clustering import view_centroids

METHOD_OPS = "cribo_ops"  # clustering + bank search, cycle check and enqueue: all of CrIBo's own ops


def method_parts(config) -> dict[str, Part]:
    """CrIBo's own ops at the step's shapes, on random tokens and the trainer's sharded bank
    layout: ``clustering`` (`cribo.cluster`), ``bank`` (`cribo.bootstrap` + `memory_bank.enqueue`)
    and both in one call (`METHOD_OPS`, the GPU suite's "method ops")."""
    c, vit = config.cribo, build.backbone(config.model)
    b, n = config.data.batch_size, (config.crops.global_size // vit.patch_size) ** 2
    mesh, rules = shd.make_mesh(config.mesh.shape), shd.logical_rules(config.mesh.fsdp)
    boxed = memory_bank.init(c.queue_size, b, c.k, vit.embed_dim, c.bank_init, jax.random.key(0))
    specs = nn.logical_to_mesh(nn.get_partition_spec(boxed), rules)
    bank = jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), nn.unbox(boxed), specs)
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    rows = NamedSharding(mesh, shd.batch_sharding(mesh).spec)
    tokens = jax.device_put(jax.random.normal(k1, (b, 2 * n, vit.embed_dim)), rows)
    positions = jax.device_put(config.crops.global_size * jax.random.uniform(k2, (b, 2, n, 2)), rows)
    ids = jnp.arange(b, dtype=jnp.int32)

    def clustering(tokens, positions, key):
        return cribo.cluster(tokens, positions, key, 0, config)

    def bank_part(bank, objects, valid):
        boot = cribo.bootstrap(bank, objects, valid, c, mesh)
        return boot, memory_bank.enqueue(bank, objects, valid, ids, mesh=mesh)

    def both(bank, tokens, positions, key):
        clusters = clustering(tokens, positions, key)
        return bank_part(bank, view_centroids(clusters.assign, tokens, clusters.valid), clusters.valid)

    clusters = jax.jit(clustering)(tokens, positions, k3)
    objects = jax.jit(view_centroids)(clusters.assign, tokens, clusters.valid)
    return {
        "clustering": Part(jax.jit(clustering), (tokens, positions, k3)),
        "bank": Part(jax.jit(bank_part), (bank, objects, clusters.valid)),
        METHOD_OPS: Part(jax.jit(both), (bank, tokens, positions, k3)),
    }


def main() -> None:
    args, config, step_s = parts_cli("configs/cribo_coco.py")
    parts = method_parts(config)
    cluster_s, bank_s = (median_ms(*parts[k], repeats=args.repeats) / 1e3 for k in ("clustering", "bank"))
    record = {
        "config": args.config,
        "overrides": args.set,
        "device": jax.devices()[0].device_kind,
        "n_devices": jax.device_count(),
        "batch": config.data.batch_size,
        "k": config.cribo.k,
        "queue_size": config.cribo.queue_size,
        "step_ms": round(step_s * 1e3, 1),
        "clustering_ms": round(cluster_s * 1e3, 1),
        "bank_ms": round(bank_s * 1e3, 1),
        "clustering_share": round(cluster_s / step_s, 4),
        "bank_share": round(bank_s / step_s, 4),
        "cribo_share": round((cluster_s + bank_s) / step_s, 4),
    }
    emit(record, args.out)


if __name__ == "__main__":
    main()
