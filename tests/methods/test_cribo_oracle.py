"""cribo.md §9 check 10: a NumPy oracle that follows §4–§6 literally (valid objects compacted
into lists, the reference's newest-first contiguous bank with per-image counts, cycle
back-search over the compacted objects of the device batch, losses as written in §6) against
the static JAX pieces of methods/cribo.py (fixed slots + masks, the ring bank, `bootstrap`,
`object_losses`), same seeds, 10 simulated steps (B = 3 images per group, K = 4, S = 6 images,
4×4 grids, D = 8; cross-image loss gated off in the first two steps): identical valid masks,
NN identities (image id, object id) and cycle masks; L_cv, L_ci, center_c to 1e-5."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs.cribo_coco import get_config
from dense_jax.core import sharding as shd
from dense_jax.methods import cribo
from dense_jax.ops import memory_bank
from dense_jax.ops.clustering import view_centroids
from dense_jax.ops.cribo_clustering import cribo_cluster
from tests.ops.test_cribo_clustering import grid_positions, oracle
from tests.ops.test_memory_bank import ReferenceBank, unit

F32 = np.float32
B, K, S, SIDE, D, TEMP = 3, 4, 6, 4, 8, 0.05
N = SIDE * SIDE


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_static_jax_equals_the_literal_oracle_over_ten_steps():
    config = get_config("smoke")
    config.cribo.update(dict(k=K, queue_size=S, group=B, pos_alpha=(2.0, 2.0)))
    c = config.cribo
    mesh = shd.make_mesh((1, 1))
    head = cribo.heads(config)
    params_s = nn.unbox(head.init(jax.random.key(0), jnp.zeros((1, D))))["params"]
    params_t = jax.tree.map(lambda x: x * 1.05, params_s)

    def logits(params, x):
        return np.asarray(
            head.apply({"params": params}, jnp.asarray(x, jnp.float32), method="dense"), np.float64
        )

    @jax.jit
    def static_step(bank, center, tokens_t, tokens_s, pos, seeds, image, epoch):
        clusters = cribo_cluster(tokens_t, pos, seeds=seeds, k=K, lam_pos=2.0, norm_group=B)
        obj_t = view_centroids(clusters.assign, tokens_t, clusters.valid)
        obj_s = view_centroids(clusters.assign, tokens_s, clusters.valid)
        boot = cribo.bootstrap(bank, obj_t, clusters.valid, c, mesh)
        bank = memory_bank.enqueue(bank, obj_t, clusters.valid, image, mesh=mesh)
        out = cribo.object_losses(
            head, params_s, params_t, obj_t, obj_s, boot, clusters.valid, center, TEMP, epoch, config
        )
        return bank, clusters.valid, boot, out

    bank = nn.unbox(memory_bank.init(S, B, K, D, "reference", jax.random.key(3)))
    ref = ReferenceBank(jax.device_get(bank), S)
    center = np.zeros((1, c.out_dim), F32)
    rng = np.random.default_rng(0)
    n_cycles, cross_image = 0, []
    for step in range(10):
        tokens_t = rng.normal(size=(B, 2 * N, D)).astype(F32)
        tokens_s = (tokens_t + 0.3 * rng.normal(size=tokens_t.shape)).astype(F32)
        pos = grid_positions(B, SIDE, rng)
        seeds = np.stack([rng.permutation(2 * N)[:K] for _ in range(B)]).astype(np.int32)
        image = np.arange(B, dtype=np.int32) + step * B
        epoch = int(step >= 2)
        bank, valid, boot, out = static_step(bank, center, tokens_t, tokens_s, pos, seeds, image, epoch)

        # --- oracle: compaction, the reference bank, cycle over the compacted lists, §6 losses
        _, assign, valid_o, _, _ = oracle(tokens_t, pos, seeds, k=K, lam_pos=2.0, group=B)
        np.testing.assert_array_equal(valid, valid_o)
        pairs = [(b, k) for b in range(B) for k in range(K) if valid_o[b, k]]
        obj = [
            np.stack([assign[b, v * N : (v + 1) * N, k] @ tokens_t[b, v * N : (v + 1) * N] for b, k in pairs])
            for v in range(2)
        ]
        obj_s = [
            np.stack([assign[b, v * N : (v + 1) * N, k] @ tokens_s[b, v * N : (v + 1) * N] for b, k in pairs])
            for v in range(2)
        ]
        rows = [np.stack([e[2 + v] for e in ref.entries]) for v in range(2)]
        nn_ = [(unit(obj[v]) @ unit(rows[v]).T).argmax(axis=1) for v in range(2)]
        hits = []
        for v in range(2):
            jumped = unit(rows[1 - v][nn_[v]])
            back = (jumped @ unit(obj[1 - v]).T).argmax(axis=1)
            hits.append(back == np.arange(len(pairs)))
        for v in range(2):
            ids = [ref.entries[j][:2] for j in nn_[v]]
            got = [(int(boot.image[v, b, k]), int(boot.object[v, b, k])) for b, k in pairs]
            assert got == ids, f"NN identities differ at step {step}, view {v + 1}"
            cycle = np.zeros((B, K), bool)
            cycle[tuple(np.array(pairs).T)] = hits[v]
            np.testing.assert_array_equal(boot.cycle[v], cycle)
            n_cycles += hits[v].sum()

        t = [softmax((logits(params_t, obj[v]) - center) / TEMP) for v in range(2)]
        s = [log_softmax(logits(params_s, obj_s[v]) / c.student_temp) for v in range(2)]
        tn = [softmax((logits(params_t, rows[v][nn_[v]]) - center) / TEMP) for v in range(2)]
        ce = [-(t[v] * s[1 - v]).sum(-1) for v in range(2)]
        cen = [-(tn[v] * s[1 - v]).sum(-1) for v in range(2)]
        l_cv = 0.5 * (ce[0].mean() + ce[1].mean())
        z1 = hits[0].sum()
        l_ci = 0.5 * (cen[0][hits[0]].sum() + cen[1][hits[1]].sum()) / z1 if epoch >= 1 and z1 > 0 else 0.0
        raw = np.concatenate([logits(params_t, obj[v]) for v in range(2)])
        new_center = 0.9 * center + 0.1 * raw.mean(axis=0)
        cross_image.append(l_ci)
        np.testing.assert_allclose(out.cross_view, l_cv, rtol=1e-5)
        np.testing.assert_allclose(out.cross_image, l_ci, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(out.center, new_center, rtol=1e-5, atol=1e-6)
        center = np.asarray(out.center)

        objects = np.zeros((2, B, K, D), F32)
        for i, (b, k) in enumerate(pairs):
            objects[:, b, k] = obj[0][i], obj[1][i]
        ref.enqueue(objects, valid_o, image)
    assert n_cycles > 0  # some cycles close: the masks are not trivially all False
    assert cross_image[:2] == [0.0, 0.0] and max(cross_image) > 0
