"""CrIBo's memory bank (dense_jax.ops.memory_bank; cribo.md §5, §9 checks 6, 7, 8, 10):

- the sharded chunked search equals a brute-force NumPy arg-max over live slots, on 1 and 8
  devices, and a masked slot holding a copy of the query is never returned;
- 10 simulated steps against the reference's bank (newest-first contiguous list of valid
  objects, per-image counts, FIFO eviction by whole images, search before enqueue) from the
  `reference` init: identical NN identities (image id, object id) and identical stored
  (image, object) multisets, on 1 and 8 devices;
- the cycle fixture of §9.6 through `back_search`;
- the bank's bytes per device.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dense_jax.core import sharding as shd
from dense_jax.ops import memory_bank as mb

F32 = np.float32


def mesh(n):
    return shd.make_mesh((n, 1))


def search(bank, queries, num_images, n_dev, chunk=0, dtype="float32"):
    """`mb.search` jitted (eager shard_map dispatches op by op: slow)."""
    m = mesh(n_dev)
    run = jax.jit(lambda b, q: mb.search(b, q, num_images=num_images, mesh=m, chunk=chunk, dtype=dtype))
    return run(bank, queries)


def enqueue(bank, objects, valid, image, n_dev):
    return jax.jit(lambda *a: mb.enqueue(*a, mesh=mesh(n_dev)))(bank, objects, valid, image)


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@pytest.mark.parametrize(
    "n_dev, chunk, dtype", [(1, 0, "float32"), (1, 3, "float32"), (8, 0, "float32"), (2, 2, "bfloat16")]
)
def test_search_equals_brute_force(n_dev, chunk, dtype):
    rng = np.random.default_rng(0)
    num_images, batch, k, dim = 20, 8, 3, 5
    bank = jax.device_get(mb.init(num_images, batch, k, dim, "reference", jax.random.key(1)))
    bank = jax.tree.map(np.asarray, nn_unbox(bank))
    bank["objects"] = rng.normal(size=bank["objects"].shape).astype(F32)
    bank["valid"] = rng.random(bank["valid"].shape) < 0.7
    bank["ptr"] = np.int32(1)
    queries = rng.normal(size=(2, 7, dim)).astype(F32)
    # a masked slot holding an exact copy of query 0 of view 0 (cribo.md §9 check 8)
    bank["valid"][0, 2, 1] = False
    bank["objects"][0, 0, 2, 1] = queries[0, 0]
    got = search(bank, jnp.asarray(queries), num_images, n_dev, chunk, dtype)
    ok = np.asarray(mb.live(bank, num_images)).reshape(-1)
    assert ok.sum() < bank["valid"].sum()  # the age mask removes surplus slots of the oldest row
    for v in range(2):
        rows = bank["objects"][v].reshape(-1, dim)
        sims = np.where(ok[None], unit(queries[v]) @ unit(rows).T, -np.inf)
        want = sims.argmax(axis=1)
        np.testing.assert_array_equal(got.index[v], want)
        np.testing.assert_array_equal(got.same[v], rows[want])
        np.testing.assert_array_equal(got.other[v], bank["objects"][1 - v].reshape(-1, dim)[want])
        np.testing.assert_array_equal(got.image[v], bank["image"].reshape(-1)[want // k])
    assert np.all(got.found) and got.index[0, 0] != (0 * batch + 2) * k + 1


def test_empty_bank_finds_nothing():
    bank = nn_unbox(mb.init(4, 2, 2, 3, "empty", jax.random.key(0)))
    got = search(bank, jnp.ones((2, 5, 3)), 4, 2)
    assert not np.asarray(got.found).any() and np.all(np.asarray(got.index) == -1)


def nn_unbox(tree):
    import flax.linen as nn

    return nn.unbox(tree)


class ReferenceBank:
    """The reference's bank: rows newest-first, only valid objects, counts per image."""

    def __init__(self, ring, num_images):
        objects, rows, batch = ring["objects"], ring["image"].shape[0], ring["image"].shape[1]
        self.s = num_images
        self.entries, self.counts = [], []  # entries: (image id, object, vec view 1, vec view 2)
        for age in range(num_images):  # image r = age r, taken from its ring slot
            r, i = rows - 1 - age // batch, age % batch
            k = objects.shape[3]
            self.entries += [(-1 - age, o, objects[0, r, i, o], objects[1, r, i, o]) for o in range(k)]
            self.counts.append(k)

    def search(self, queries):
        """(2, Q) (image id, object) of the cosine NN of view v's queries in bank v."""
        out = []
        for v in range(2):
            rows = np.stack([e[2 + v] for e in self.entries])
            best = (unit(queries[v]) @ unit(rows).T).argmax(axis=1)
            out.append([self.entries[j][:2] for j in best])
        return out

    def enqueue(self, objects, valid, image):
        new, counts = [], []
        for i in range(len(image)):
            ks = np.flatnonzero(valid[i])
            new += [(int(image[i]), int(o), objects[0, i, o], objects[1, i, o]) for o in ks]
            counts.append(len(ks))
        counts = (counts + self.counts)[: self.s]
        self.entries = (new + self.entries)[: sum(counts)]
        self.counts = counts


@pytest.mark.parametrize("n_dev", [1, 8])
def test_ten_steps_match_the_reference_bank(n_dev):
    rng = np.random.default_rng(1)
    num_images, batch, k, dim = 20, 8, 3, 6
    m = mesh(n_dev)
    ring = nn_unbox(mb.init(num_images, batch, k, dim, "reference", jax.random.key(2)))
    ref = ReferenceBank(jax.device_get(ring), num_images)
    step_fn = jax.jit(
        lambda ring, q, obj, val, img: (
            mb.search(ring, q, num_images=num_images, mesh=m),
            mb.enqueue(ring, obj, val, img, mesh=m),
        )
    )
    for step in range(10):
        objects = rng.random((2, batch, k, dim)).astype(F32)
        valid = rng.random((batch, k)) < 0.6
        image = np.arange(batch, dtype=np.int32) + step * batch
        queries = objects.reshape(2, batch * k, dim)
        match, ring = step_fn(ring, queries, objects, valid, image)
        want = ref.search(queries)
        got_ids = [
            list(zip(np.asarray(match.image[v]).tolist(), (np.asarray(match.index[v]) % k).tolist()))
            for v in range(2)
        ]
        assert got_ids == want, f"NN identities differ at step {step}"
        ref.enqueue(objects, valid, image)
        host = jax.device_get(ring)
        ok = np.asarray(mb.live(host, num_images))
        stored = sorted((int(host["image"][r, i]), int(o)) for r, i, o in zip(*np.nonzero(ok)))
        assert stored == sorted(e[:2] for e in ref.entries)
        assert len(stored) == sum(ref.counts) and len(ref.counts) == num_images


def test_fifo_counts_fixture():
    """cribo.md §9.7: S = 5, counts [2,3,1,2,2]; enqueue counts [2,1] ⇒ [2,1,2,3,1], 9 rows."""
    ref = ReferenceBank.__new__(ReferenceBank)
    ref.s, ref.counts = 5, [2, 3, 1, 2, 2]
    ref.entries = [(-1, j, None, None) for j in range(10)]
    valid = np.array([[True, True], [True, False]])
    ref.enqueue(np.zeros((2, 2, 2, 1)), valid, np.array([7, 8]))
    assert ref.counts == [2, 1, 2, 3, 1] and len(ref.entries) == 9
    assert [e[0] for e in ref.entries[:3]] == [7, 7, 8] and [e[1] for e in ref.entries[3:]] == list(range(6))


def test_ring_keeps_the_first_images_when_the_batch_exceeds_the_bank():
    ring = nn_unbox(mb.init(3, 4, 1, 2, "empty", jax.random.key(0)))
    objects = np.arange(16, dtype=F32).reshape(2, 4, 1, 2)
    ring = enqueue(ring, objects, np.ones((4, 1), bool), np.arange(4, dtype=np.int32), 4)
    ok = np.asarray(mb.live(jax.device_get(ring), 3))
    np.testing.assert_array_equal(ok[0, :, 0], [True, True, True, False])


def test_cycle_fixture():
    """cribo.md §9.6 (S = 2 images × 1 object, D = 2, local batch 2 × 1)."""
    bank = nn_unbox(mb.init(2, 2, 1, 2, "empty", jax.random.key(0)))
    m1, m2 = np.array([[1, 0], [0, 1]], F32), np.array([[1, 0.1], [0.1, 1]], F32)
    bank = enqueue(bank, np.stack([m1, m2])[:, :, None], np.ones((2, 1), bool), np.arange(2), 2)

    def run(c1, c2):
        q = np.stack([c1, c2]).astype(F32)
        match = search(bank, jnp.asarray(q), 2, 2)
        valid = np.ones((2, 1), bool)
        back = jax.jit(mb.back_search, static_argnums=3)
        v1 = back(match.other[0][:, None], q[1][:, None], valid, 2)
        v2 = back(match.other[1][:, None], q[0][:, None], valid, 2)
        return np.asarray(match.index), np.asarray(v1)[:, 0], np.asarray(v2)[:, 0]

    nn, v1, v2 = run([[1, 0.05], [0.6, 0.8]], [[1, 0], [0, 1]])
    np.testing.assert_array_equal(nn, [[0, 1], [0, 1]])
    assert v1.all() and v2.all()
    nn, v1, v2 = run([[1, 0.05], [0.6, 0.8]], [[0.2, 1], [1, 0]])
    np.testing.assert_array_equal(nn, [[0, 1], [1, 0]])
    assert not v1.any() and not v2.any()


def test_bytes_per_device():
    # ViT-S COCO: S = 25000, B = 256, K = 64, D = 384 on 8 devices: R = 98 rows of 32 slots
    assert mb.bytes_per_device(25000, 256, 64, 384, 8) == 98 * 32 * 64 * (2 * 384 * 4 + 1) + 98 * 32 * 4


def test_back_search_ignores_invalid_keys():
    """cribo.md §9.8: an invalid key holding a copy of the jumped vector is never the hit."""
    rng = np.random.default_rng(4)
    keys = rng.normal(size=(4, 2, 3)).astype(F32)
    jumped = keys + 0.01 * rng.normal(size=keys.shape).astype(F32)
    valid = np.ones((4, 2), bool)
    back = jax.jit(mb.back_search, static_argnums=3)
    assert np.asarray(back(jumped, keys, valid, 2)).all()
    keys[0, 1] = jumped[0, 0]  # object (0, 1): invalid, an exact copy of (0, 0)'s jumped vector
    valid[0, 1] = False
    assert np.asarray(back(jumped, keys, valid, 2))[0, 0]
    valid[0, 1] = True  # the same copy, valid: it wins (the test can fail)
    assert not np.asarray(back(jumped, keys, valid, 2))[0, 0]
