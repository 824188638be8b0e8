"""CrIBo's fixed-K clustering (dense_jax.ops.cribo_clustering) against a NumPy oracle written
from cribo.md §4 (literal (B, 2N, 2N, K) positional cost, Python loops), and the cribo.md §9
fixtures 2 (positional cost), 3 (segment-min vs 4-D formula), 4 (marginals), 5 (identical
views), 11 (batch permutation), plus a batch of one image (§10)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dense_jax.ops import cribo_clustering as cc
from dense_jax.ops.clustering import view_centroids

F32 = np.float32


def np_positional_cost(pos, member):
    """Literal cribo.md §4 step 2: pos (2N, 2), member (2N, K) bool (A[l, k] = 1)."""
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    ok = member[None, :, :] & (d[:, :, None] > 0)  # (n, l, k): the 4-D tensor of the reference
    t = np.where(ok, d[:, :, None], np.inf).min(axis=1)
    ph = ~np.isfinite(t)
    t[ph] = 0.0
    t[ph] = t.mean()
    return (t / t.max()).astype(F32)


def np_sinkhorn(M, r, c, lam=20.0, iters=5):
    P = np.exp(F32(-lam) * M)
    P = P / P.sum()
    for _ in range(iters):
        P = P * (r / P.sum(axis=1))[:, None]
        P = P * (c / P.sum(axis=0))[None, :]
    return np.nan_to_num(P, nan=1e-8)


def oracle(tokens, pos, seeds, *, k, lam_pos, group, n_iter=5):
    """cribo.md §4 literally; returns (labels (B, 2N), Â (B, 2N, K), valid (B, K), marginals
    used by each Sinkhorn call (n_iter, B, K), column sums of each plan)."""
    b, n2, _ = tokens.shape
    x = (tokens / np.linalg.norm(tokens, axis=-1, keepdims=True)).astype(F32)
    member = np.zeros((b, n2, k), bool)
    for i in range(b):
        member[i, seeds[i], np.arange(k)] = True
    C = np.stack([x[i, seeds[i]] for i in range(b)])
    c = np.full((b, k), 1.0 / k, F32)
    r = np.full(n2, 1.0 / n2, F32)
    used, colsums = [], []
    for _ in range(n_iter):
        M = np.stack([-x[i] @ C[i].T + lam_pos * np_positional_cost(pos[i], member[i]) for i in range(b)])
        for g0 in range(0, b, group):
            m = M[g0 : g0 + group]
            M[g0 : g0 + group] = (m - m.min()) / (m.max() - m.min())
        P = np.stack([np_sinkhorn(M[i].astype(F32), r, c[i]) for i in range(b)])
        used.append(c.copy())
        colsums.append(P.sum(axis=1))
        labels = P.argmax(axis=-1)
        member = np.eye(k, dtype=bool)[labels]
        sizes = member.sum(axis=1) + 0.01
        c = (sizes / sizes.sum(axis=1, keepdims=True)).astype(F32)
        C = np.einsum("bnk,bnd->bkd", member.astype(F32), x)
        C = C / np.maximum(np.linalg.norm(C, axis=-1, keepdims=True), 1e-12)
    n = n2 // 2
    a = member.astype(F32).reshape(b, 2, n, k)
    s = a.sum(axis=2, keepdims=True)
    assign = (a / np.where(s > 0, s, 1)).reshape(b, n2, k)
    valid = (s[:, 0, 0] > 0) & (s[:, 1, 0] > 0)
    return labels, assign, valid, np.stack(used), np.stack(colsums)


def grid_positions(b, side, rng):
    """Two views per image: a side×side grid each, scaled and shifted at random (pixels)."""
    g = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:, ::-1]
    views = [g * rng.uniform(5, 20) + rng.uniform(0, 50, 2) for _ in range(2 * b)]
    return np.stack(views).reshape(b, 2 * side * side, 2).astype(F32)


def problem(b=4, side=4, d=8, k=5, seed=0):
    rng = np.random.default_rng(seed)
    n2 = 2 * side * side
    tokens = rng.normal(size=(b, n2, d)).astype(F32)
    pos = grid_positions(b, side, rng)
    seeds = np.stack([rng.permutation(n2)[:k] for _ in range(b)]).astype(np.int32)
    return tokens, pos, seeds


def test_positional_cost_fixture():
    pos = np.array([[[0, 0], [3, 0], [0, 4], [3, 4]]], F32)
    labels = np.array([[0, 0, 1, 2]], np.int32)  # t3 unassigned (label K = 2)
    got = cc.positional_cost(cc.pairwise_distances(jnp.asarray(pos)), jnp.asarray(labels), 2)
    want = [[0.6, 0.8], [0.6, 1.0], [0.8, 0.65], [0.8, 0.6]]
    np.testing.assert_allclose(got[0], want, atol=1e-6)
    # first iteration: seeds only; the seed gets μ/max for its own cluster
    seeds_only = np.array([[0, 2, 2, 1]], np.int32)  # seed of cluster 0 = t0, of cluster 1 = t3
    t = np.asarray(cc.positional_cost(cc.pairwise_distances(jnp.asarray(pos)), jnp.asarray(seeds_only), 2))[0]
    raw = np.array([[0, 5], [3, 4], [4, 3], [5, 0]], F32)
    mu = raw.sum() / raw.size
    raw[0, 0] = raw[3, 1] = mu
    np.testing.assert_allclose(t, raw / raw.max(), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segment_min_equals_the_4d_formula(seed):
    rng = np.random.default_rng(seed)
    b, n2, k = 3, 12, 4
    pos = rng.integers(0, 4, size=(b, n2, 2)).astype(F32)  # many duplicated positions
    labels = rng.integers(0, k + 1, size=(b, n2)).astype(np.int32)  # K = unassigned
    labels[0] = np.where(labels[0] == 1, 0, labels[0])  # an empty cluster
    labels[1, :] = k
    labels[1, 3] = 2  # a singleton, all other clusters empty
    got = cc.positional_cost(cc.pairwise_distances(jnp.asarray(pos)), jnp.asarray(labels), k)
    for i in range(b):
        member = labels[i][:, None] == np.arange(k)[None]
        np.testing.assert_allclose(got[i], np_positional_cost(pos[i], member), atol=1e-6)


@pytest.mark.parametrize("group", [1, 2, 4])
def test_matches_the_numpy_oracle(group):
    tokens, pos, seeds = problem()
    labels, assign, valid, used, colsums = oracle(tokens, pos, seeds, k=5, lam_pos=2.0, group=group)
    got = cc.cribo_cluster(tokens, pos, seeds=seeds, k=5, lam_pos=2.0, norm_group=group)
    np.testing.assert_array_equal(got.labels, labels)
    np.testing.assert_array_equal(got.valid, valid)
    np.testing.assert_allclose(got.assign, assign, atol=1e-7)
    assert valid.any() and len(np.unique(labels)) > 2
    # marginals: uniform in the first solve, then ∝ cluster size + 0.01; plans' columns sum to c
    np.testing.assert_allclose(used[0], 0.2)
    assert not np.allclose(used[1], 0.2)
    np.testing.assert_allclose(colsums, used, atol=1e-6)
    # Â columns sum to 1 per view where the cluster is there
    s = np.asarray(got.assign).reshape(4, 2, 16, 5).sum(axis=2)
    np.testing.assert_allclose(s[np.broadcast_to(valid[:, None], s.shape)], 1.0, rtol=1e-6)


def test_identical_views_give_equal_objects_and_every_nonempty_cluster_is_valid():
    tokens, pos, seeds = problem(seed=3)
    n = tokens.shape[1] // 2
    tokens[:, n:], pos[:, n:] = tokens[:, :n], pos[:, :n]
    out = cc.cribo_cluster(tokens, pos, seeds=seeds, k=5, lam_pos=2.0, norm_group=None)
    obj = np.asarray(view_centroids(out.assign, tokens, out.valid))
    nonempty = np.asarray(jax.nn.one_hot(out.labels, 5)).sum(1) > 0
    np.testing.assert_array_equal(out.valid, nonempty)
    np.testing.assert_array_equal(obj[0], obj[1])


def test_batch_permutation_permutes_the_result():
    tokens, pos, seeds = problem(b=4, seed=4)
    perm = np.array([2, 0, 3, 1])
    a = cc.cribo_cluster(tokens, pos, seeds=seeds, k=5, lam_pos=1.0, norm_group=None)
    b = cc.cribo_cluster(tokens[perm], pos[perm], seeds=seeds[perm], k=5, lam_pos=1.0, norm_group=None)
    np.testing.assert_array_equal(np.asarray(a.labels)[perm], b.labels)
    np.testing.assert_array_equal(np.asarray(a.valid)[perm], b.valid)


def test_one_image_and_sampled_seeds():
    tokens, pos, _ = problem(b=1, seed=5)
    out = cc.cribo_cluster(tokens, pos, jax.random.key(0), k=5, lam_pos=1.0, norm_group=1)
    assert out.assign.shape == (1, 32, 5) and np.asarray(out.valid).any()
    with pytest.raises(ValueError, match="norm_group = 3 must divide"):
        cc.cribo_cluster(tokens, pos, jax.random.key(0), k=5, lam_pos=1.0, norm_group=3)
