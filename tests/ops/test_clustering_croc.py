"""CrOC joint-view clustering (dense_jax.ops.clustering): a NumPy mirror of the reference
procedure (croc.md §4, dynamic shapes) against the static JAX op (§5), and croc.md §9 checks 3, 4,
6, 7, 8 (merge loop, selection, identical views, group coupling/permutation, static vs dynamic)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from dense_jax.ops import clustering as cl
from dense_jax.ops.clustering import croc_cluster, view_centroids

F32 = np.float32


# ------------------------------------------------------------------------------------------------
# NumPy mirror of the reference (croc.md §4): Python loops, compaction, append-last order.


def _np_sinkhorn(M, r, c, lam, n_iters):
    P = np.exp(F32(-lam) * M)
    P = P / P.sum()
    for _ in range(n_iters):
        P = P * (r / P.sum(axis=1))[:, None]
        P = P * (c / P.sum(axis=0))[None, :]
    return np.nan_to_num(P, nan=1e-8)


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(F32)


def mirror(
    fp,
    fc,
    pos,
    seeds,
    *,
    num_heads,
    k_start,
    k_max,
    lam_pos,
    norm_group,
    lam=20.0,
    iters=5,
    temp_r=2.0,
    temp_c=2.0,
):
    """Returns per-sample dicts (A padded to k_start, valid, k, costs, gaps) in the reference order.
    ``gaps`` are the margins to the nearest tie (merge score, cost argmin, hard-assignment argmax)."""
    S, n2, _ = fp.shape
    n = n2 // 2
    gs = S if norm_group is None else norm_group * num_heads
    out = [None] * S
    for g0 in range(0, S, gs):
        idx = list(range(g0, g0 + gs))
        st = {}
        for s in idx:
            phi = _unit(fp[s].astype(F32))
            cls = _unit(fc[s].astype(F32))
            rho = np.concatenate([phi[:n] @ cls[0], phi[n:] @ cls[1]]).astype(F32)
            e = np.exp(rho / F32(temp_r) - np.max(rho / F32(temp_r)))
            r = (e / e.sum()).astype(F32)
            cs = np.exp(rho[seeds[s]] / F32(temp_c) - np.max(rho[seeds[s]] / F32(temp_c)))
            st[s] = dict(
                phi=phi,
                E=pos[s].astype(F32),
                r=r,
                c=(cs / cs.sum()).astype(F32),
                C=phi[seeds[s]],
                Ec=pos[s][seeds[s]].astype(F32),
                costs=[],
                Qs=[],
                gap=np.inf,
            )
        for K in range(k_start, 1, -1):
            Ms = {}
            for s in idx:
                d = st[s]
                Cn = _unit(d["C"])
                G = np.linalg.norm(d["E"][:, None, :] - d["Ec"][None, :, :], axis=-1).astype(F32)
                G = G / G.max()
                Ms[s] = (-(d["phi"] @ Cn.T) + F32(lam_pos) * G).astype(F32)
            mn = min(M.min() for M in Ms.values())
            mx = max(M.max() for M in Ms.values())
            for s in idx:
                d = st[s]
                M = (Ms[s] - mn) / (mx - mn)
                Pm = _np_sinkhorn(M, d["r"], d["c"], lam, iters)
                d["costs"].append(float((Pm * M).sum()))
                d["Qs"].append(np.concatenate([Pm[:n] / Pm[:n].sum(0), Pm[n:] / Pm[n:].sum(0)]))
                if K == 2:
                    continue
                Pn = Pm / Pm.sum(0)
                Cp = Pn.T @ d["phi"]
                score = Cp @ Cp.T - 2 * np.eye(K, dtype=F32)
                flat = np.argmax(score)  # first maximum, row-major
                i, j = divmod(int(flat), K)
                srt = np.sort(score[~np.eye(K, dtype=bool)])[::-1]  # symmetric: top pair twice
                d["gap"] = min(d["gap"], srt[1] - srt[2] if K > 2 and srt.size > 2 else np.inf)
                others = [k for k in range(K) if k not in (i, j)]
                Pm = np.concatenate([Pm[:, others], (Pm[:, i] + Pm[:, j])[:, None]], axis=1)
                Pn = Pm / Pm.sum(0)
                d["C"] = (Pn.T @ d["phi"]).astype(F32)
                d["Ec"] = (Pn.T @ d["E"]).astype(F32)
                c = d["r"] @ Pn
                d["c"] = (c / c.sum()).astype(F32)
        for s in idx:
            d = st[s]
            costs = np.array(d["costs"])
            elig = [t for t in range(k_start - 1) if k_start - t <= k_max]
            t = elig[int(np.argmin(costs[elig]))]
            ce = np.sort(costs[elig])
            cgap = ce[1] - ce[0] if ce.size > 1 else np.inf
            Q = d["Qs"][t]
            K = Q.shape[1]
            m = Q == Q.max(axis=1, keepdims=True)
            A = np.zeros((n2, k_start), F32)
            A[:, :K] = Q * m
            valid = np.zeros(k_start, bool)
            valid[:K] = (A[:n, :K].sum(0) > 0) & (A[n:, :K].sum(0) > 0)
            qs = np.sort(Q, axis=1)
            agap = float(np.min(qs[:, -1] - qs[:, -2]))
            out[s] = dict(A=A, valid=valid, k=K, costs=costs, gaps=(d["gap"], cgap, agap))
    return out


# ------------------------------------------------------------------------------------------------
# Fixtures


def _positions(rng, grid, H=300, W=400):
    """Analytic patch centres of a random crop (croc.md §2), original-image pixels."""
    h, w = rng.integers(100, H), rng.integers(100, W)
    i, j = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
    p = np.arange(grid)
    x = j + (p + 0.5) * w / grid - 0.5
    y = i + (p + 0.5) * h / grid - 0.5
    if rng.random() < 0.5:
        x = x[::-1]
    yy, xx = np.meshgrid(y, x, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], -1)


def _problem(seed, B=4, H=2, grid=4, d=8, k_start=6):
    rng = np.random.default_rng(seed)
    n = grid * grid
    S = B * H
    fp = rng.normal(size=(S, 2 * n, d)).astype(F32)
    fc = rng.normal(size=(S, 2, d)).astype(F32)
    pos_img = np.stack([np.concatenate([_positions(rng, grid), _positions(rng, grid)]) for _ in range(B)])
    pos = np.repeat(pos_img, H, axis=0).astype(F32)  # shared by the heads of an image
    seeds = np.stack([rng.permutation(2 * n)[:k_start] for _ in range(S)]).astype(np.int32)
    return fp, fc, pos, seeds


KW = dict(num_heads=2, k_start=6, k_max=4, lam_pos=3.0)
KW_ALL = dict(num_heads=2, k_start=6, k_max=6, lam_pos=1.0)


# ------------------------------------------------------------------------------------------------
# Static vs dynamic (croc.md §9 check 8)


@pytest.mark.parametrize("kw", [KW, KW_ALL], ids=["kmax4", "kmax6"])
@pytest.mark.parametrize("norm_group", [1, 2, None])
def test_mirror_parity(norm_group, kw):
    compared, max_da = 0, 0.0
    for seed in range(6):
        fp, fc, pos, seeds = _problem(seed)
        ref = mirror(fp, fc, pos, seeds, norm_group=norm_group, **kw)
        res = croc_cluster(fp, fc, pos, seeds=seeds, norm_group=norm_group, **kw)
        A, valid, k, costs = (np.asarray(x) for x in res)
        for s, rs in enumerate(ref):
            if min(rs["gaps"]) < 1e-4:  # near-tie: float32 summation order may flip it
                continue
            compared += 1
            assert k[s] == rs["k"], (seed, s)
            np.testing.assert_array_equal(valid[s], rs["valid"])
            np.testing.assert_array_equal(A[s] > 0, rs["A"] > 0)
            np.testing.assert_allclose(costs[s], rs["costs"], atol=1e-5)
            max_da = max(max_da, float(np.abs(A[s] - rs["A"]).max()))
    assert compared >= 40, compared  # of 48 samples
    assert max_da < 1e-5, max_da


def test_random_seeds_are_distinct_and_keyed():
    fp, fc, pos, _ = _problem(0)
    a = croc_cluster(fp, fc, pos, jax.random.key(1), norm_group=2, **KW)
    b = croc_cluster(fp, fc, pos, jax.random.key(1), norm_group=2, **KW)
    np.testing.assert_array_equal(np.asarray(a.assign), np.asarray(b.assign))
    seeds = jax.lax.top_k(jax.random.gumbel(jax.random.key(1), (8, 32)), 6)[1]
    assert all(len(set(np.asarray(x).tolist())) == 6 for x in seeds)


def test_uniform_marginals_runs():
    fp, fc, pos, seeds = _problem(3)
    res = croc_cluster(fp, fc, pos, seeds=seeds, norm_group=1, uniform_marginals=True, **KW)
    assert np.all(np.asarray(res.k) >= 2) and np.all(np.asarray(res.k) <= 4)
    assert np.all(np.isfinite(np.asarray(res.assign)))


# ------------------------------------------------------------------------------------------------
# Merge loop and selection (croc.md §9 checks 3, 4)


def test_one_live_cluster_removed_per_step_and_selection():
    fp, fc, pos, seeds = _problem(7)
    out, n_live = cl._croc_jit(
        jnp.asarray(fp),
        jnp.asarray(fc),
        jnp.asarray(pos),
        None,
        jnp.asarray(seeds),
        k_start=6,
        k_max=4,
        lam_pos=3.0,
        group=4,
        lam=20.0,
        n_iters=5,
        temp_r=2.0,
        temp_c=2.0,
        uniform=False,
    )
    np.testing.assert_array_equal(np.asarray(n_live), np.repeat(np.arange(6, 1, -1)[:, None], 8, 1))
    k, costs, valid = np.asarray(out.k), np.asarray(out.costs), np.asarray(out.valid)
    for s in range(8):
        t = 6 - k[s]
        assert 2 <= k[s] <= 4
        assert np.all(costs[s, t] <= costs[s, 2:])  # eligible steps t >= 2 (K <= 4)
        assert np.all(costs[s, t] < costs[s, 2:t])  # strict before: earliest step wins ties
        assert valid[s, k[s] :].sum() == 0  # dead columns after K*
        assert np.all(np.asarray(out.assign)[s, :, k[s] :] == 0)


def test_merge_pair_ties_follow_reference_order():
    """Exact ties: the pair is the first maximum of the compacted matrix in reference order."""
    rng = np.random.default_rng(0)
    K0, S = 6, 200
    score = rng.integers(0, 3, size=(S, K0, K0)).astype(F32)  # many exact ties
    live = rng.random((S, K0)) < 0.8
    live[:, :2] = True
    rank = np.full((S, K0), K0, np.int32)
    for s in range(S):
        slots = np.flatnonzero(live[s])
        rank[s, slots] = rng.permutation(slots.size)
    i, j = (np.asarray(x) for x in cl._merge_pair(jnp.asarray(score), jnp.asarray(live), jnp.asarray(rank)))
    for s in range(S):
        cols = np.flatnonzero(live[s])[np.argsort(rank[s, live[s]])]  # reference column order
        K = cols.size
        sub = score[s][np.ix_(cols, cols)] - 2 * np.eye(K, dtype=F32) * 10  # diagonal excluded
        a, b = divmod(int(np.argmax(sub)), K)
        assert (i[s], j[s]) == (cols[a], cols[b]), s


def test_hard_assignment_on_per_view_values():
    """croc.md §9 check 5: argmax of P gives [0,0,0,0], the per-view rule [0,1,0,1]."""
    Pm = jnp.asarray([[[0.30, 0.05], [0.25, 0.05], [0.20, 0.02], [0.10, 0.08]]], jnp.float32)
    live = jnp.ones((1, 2), bool)
    A, valid = cl._hard_assign(cl._per_view_colnorm(Pm, live), live)
    np.testing.assert_array_equal(np.argmax(np.asarray(A)[0], 1), [0, 1, 0, 1])
    assert np.all(np.asarray(valid))
    np.testing.assert_allclose(np.asarray(A)[0, 0, 0], 0.30 / 0.55, rtol=1e-6)  # soft value kept


def test_k_max_sweep():
    fp, fc, pos, seeds = _problem(5)
    for k_max in range(2, 7):
        kw = dict(KW, k_max=k_max)
        res = croc_cluster(fp, fc, pos, seeds=seeds, norm_group=1, **kw)
        k, costs = np.asarray(res.k), np.asarray(res.costs)
        assert np.all((k >= 2) & (k <= k_max))
        elig = costs[:, 6 - k_max :]
        np.testing.assert_array_equal(k, k_max - np.argmin(elig, axis=1))
        assert np.all(np.asarray(res.valid).sum(1) <= k)


# ------------------------------------------------------------------------------------------------
# Identical views (croc.md §9 check 6)


def test_identical_views():
    fp, fc, pos, seeds = _problem(11)
    n = fp.shape[1] // 2
    fp[:, n:] = fp[:, :n]
    fc[:, 1] = fc[:, 0]
    pos[:, n:] = pos[:, :n]
    res = croc_cluster(fp, fc, pos, seeds=seeds, norm_group=2, **KW)
    A, valid, k = np.asarray(res.assign), np.asarray(res.valid), np.asarray(res.k)
    np.testing.assert_array_equal(A[:, :n], A[:, n:])  # identical tokens, identical assignment
    nonempty = A.sum(1) > 0
    np.testing.assert_array_equal(valid, nonempty)  # every non-empty cluster is valid
    assert np.all(valid.sum(1) >= 1) and np.all(valid.sum(1) <= k)
    z = np.random.default_rng(0).normal(size=(4, n, 12)).astype(F32)
    cent = np.asarray(view_centroids(A, np.concatenate([z, z], 1), valid))
    assert cent.shape == (2, 8, 6, 12)
    np.testing.assert_array_equal(cent[0], cent[1])
    assert np.all(cent[:, ~valid] == 0)


def test_view_centroids_formula():
    rng = np.random.default_rng(2)
    A = rng.random((4, 10, 3)).astype(F32)
    z = rng.normal(size=(2, 10, 7)).astype(F32)  # 2 images, 2 heads each
    valid = rng.random((4, 3)) < 0.7
    cent = np.asarray(view_centroids(A, z, valid))
    for s in range(4):
        zb = z[s // 2]
        for v in range(2):
            want = A[s, 5 * v : 5 * v + 5].T @ zb[5 * v : 5 * v + 5]
            np.testing.assert_allclose(cent[v, s], np.where(valid[s][:, None], want, 0), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Devices, groups, permutation (croc.md §9 check 7)


def test_one_vs_eight_devices():
    fp, fc, pos, seeds = _problem(4, B=8)
    single = croc_cluster(fp, fc, pos, seeds=seeds, norm_group=2, **KW)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    sh = NamedSharding(mesh, P("data"))
    args = [jax.device_put(x, sh) for x in (fp, fc, pos, seeds)]
    multi = croc_cluster(*args[:3], seeds=args[3], norm_group=2, **KW)
    np.testing.assert_array_equal(np.asarray(single.k), np.asarray(multi.k))
    np.testing.assert_array_equal(np.asarray(single.valid), np.asarray(multi.valid))
    np.testing.assert_allclose(np.asarray(single.assign), np.asarray(multi.assign), atol=1e-6)


def test_group_permutation_and_coupling():
    fp, fc, pos, seeds = _problem(8, B=8)
    base = croc_cluster(fp, fc, pos, seeds=seeds, norm_group=2, **KW)
    gperm = np.array([2, 0, 3, 1])  # permute whole norm groups (2 images x 2 heads = 4 samples)
    perm = (gperm[:, None] * 4 + np.arange(4)[None]).ravel()
    res = croc_cluster(fp[perm], fc[perm], pos[perm], seeds=seeds[perm], norm_group=2, **KW)
    for a, b in zip(base, res):
        np.testing.assert_allclose(np.asarray(a)[perm], np.asarray(b), atol=1e-6)
    # Changing an image of another group leaves a group's result unchanged.
    fp2 = fp.copy()
    fp2[4:8] = 3.0 * np.random.default_rng(1).normal(size=fp2[4:8].shape)
    res2 = croc_cluster(fp2, fc, pos, seeds=seeds, norm_group=2, **KW)
    keep = np.r_[0:4, 8:16]
    np.testing.assert_array_equal(np.asarray(base.assign)[keep], np.asarray(res2.assign)[keep])
    # ... while an image of the same group couples through the group's min/max (croc.md §4 step 3).
    fp3 = fp.copy()
    fp3[4:6] = fp2[4:6]  # image 2 only; image 3 is in its group
    res3 = croc_cluster(fp3, fc, pos, seeds=seeds, norm_group=2, **KW)
    assert not np.allclose(np.asarray(base.costs)[6:8], np.asarray(res3.costs)[6:8])
    np.testing.assert_array_equal(np.asarray(base.costs)[keep], np.asarray(res3.costs)[keep])
    # One group over the whole batch equals norm_group = B.
    whole = croc_cluster(fp, fc, pos, seeds=seeds, norm_group=None, **KW)
    every = croc_cluster(fp, fc, pos, seeds=seeds, norm_group=8, **KW)
    for a, b in zip(whole, every):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------------------------------------
# Compile once, validation


def test_compiles_once():
    fp, fc, pos, seeds = _problem(0)
    croc_cluster(fp, fc, pos, jax.random.key(0), norm_group=2, **KW)
    n0 = cl._croc_jit._cache_size()
    for i in range(3):
        fp2, fc2, pos2, _ = _problem(i + 20)
        jax.block_until_ready(croc_cluster(fp2, fc2, pos2, jax.random.key(i), norm_group=2, **KW))
    assert cl._croc_jit._cache_size() == n0
    jitted = jax.jit(lambda a, b, c, k: croc_cluster(a, b, c, k, norm_group=2, **KW))
    jitted(fp, fc, pos, jax.random.key(0))
    jitted(fp2, fc2, pos2, jax.random.key(5))
    assert jitted._cache_size() == 1


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(norm_group=3), "norm_group"),
        (dict(k_start=1, k_max=1), "k_start"),
        (dict(k_max=7), "k_max"),
    ],
)
def test_bad_inputs(kw, msg):
    fp, fc, pos, _ = _problem(0)
    args = dict(KW, norm_group=2)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        croc_cluster(fp, fc, pos, jax.random.key(0), **args)
