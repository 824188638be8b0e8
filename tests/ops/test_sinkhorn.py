"""Sinkhorn transport plans (dense_jax.ops.sinkhorn): croc.md §9 check 2 / cribo.md §9 check 1,
the static masked formulation of croc.md §5, and a NumPy mirror of the reference routine."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dense_jax.ops import sinkhorn as sk
from dense_jax.ops.sinkhorn import sinkhorn, transport_cost

# croc.md §9 check 2 (lam = 20, 5 iterations, float64)
FIX_M = [[0, 0.5, 1], [0.2, 0.1, 0.9], [1, 0.3, 0], [0.6, 0.6, 0.6]]
FIX_R = [0.1, 0.2, 0.3, 0.4]
FIX_C = [0.5, 0.3, 0.2]
FIX_P = [
    [0.114747, 2e-6, 0],
    [0.059985, 0.166773, 0],
    [0, 0.010837, 0.194553],
    [0.325268, 0.122388, 0.005447],
]
FIX_ROWS = [0.114749, 0.226758, 0.205390, 0.453103]
FIX_COST_5, FIX_COST_1000 = 0.303788, 0.297563


def mirror(M, r, c, live=None, lam=20.0, n_iters=5):
    """The reference routine written out from the spec (croc.md §4 step 4), one sample and one
    iteration at a time, on the compacted problem (dead columns dropped, as the reference never
    has them), scattered back into the K slots. Computes in the dtype of M."""
    M = np.asarray(M)
    dt = M.dtype.type
    lead = M.shape[:-2]
    r = np.broadcast_to(np.asarray(r, M.dtype), lead + M.shape[-2:-1])
    c = np.broadcast_to(np.asarray(c, M.dtype), lead + M.shape[-1:])
    live = np.ones(lead + M.shape[-1:], bool) if live is None else np.broadcast_to(live, c.shape)
    out = np.zeros_like(M)
    for idx in np.ndindex(*lead):
        keep = np.flatnonzero(live[idx])
        P = np.exp(dt(-lam) * M[idx][:, keep])
        P = P / P.sum()
        for _ in range(n_iters):
            P = P * (r[idx] / P.sum(axis=1))[:, None]
            P = P * (c[idx][keep] / P.sum(axis=0))[None, :]
        with np.errstate(invalid="ignore"):
            out[idx][:, keep] = np.nan_to_num(P, nan=1e-8)
    return out


def _random_problem(rng, lead, n, k, dtype=np.float32, dead=True):
    M = rng.random(lead + (n, k)).astype(dtype)
    r = np.exp(rng.normal(size=lead + (n,)) / 2)
    r = (r / r.sum(-1, keepdims=True)).astype(dtype)
    live = np.ones(lead + (k,), bool)
    if dead:
        live = rng.random(lead + (k,)) < 0.7
        live[..., :2] = True  # at least 2 live columns per sample, as in CrOC's merge loop
    # c sums to 1 over the live columns; dead slots keep stale nonzero values, which are ignored
    c = np.exp(rng.normal(size=lead + (k,)) / 2)
    c = (c / (c * live).sum(-1, keepdims=True)).astype(dtype)
    return M, r, c, live


@pytest.mark.parametrize("log_domain", [False, True])
def test_fixture_float64_five_iterations(log_domain):
    with jax.enable_x64(True):
        M = jnp.asarray(FIX_M, jnp.float64)
        P = sinkhorn(M, jnp.asarray(FIX_R), jnp.asarray(FIX_C), log_domain=log_domain)
        assert P.dtype == jnp.float64
        cost = float(transport_cost(P, M))
        P = np.asarray(P)
    np.testing.assert_allclose(P, FIX_P, atol=1e-6)
    np.testing.assert_allclose(P.sum(0), FIX_C, rtol=0, atol=1e-15)  # columns exactly c
    np.testing.assert_allclose(P.sum(1), FIX_ROWS, atol=1e-6)  # rows only approximately r
    assert cost == pytest.approx(FIX_COST_5, abs=1e-6)


@pytest.mark.parametrize("log_domain", [False, True])
def test_fixture_float64_thousand_iterations(log_domain):
    with jax.enable_x64(True):
        M = jnp.asarray(FIX_M, jnp.float64)
        P = sinkhorn(M, jnp.asarray(FIX_R), jnp.asarray(FIX_C), n_iters=1000, log_domain=log_domain)
        cost = float(transport_cost(P, M))
        P = np.asarray(P)
    assert np.abs(P.sum(1) - FIX_R).max() < 1e-6
    np.testing.assert_allclose(P.sum(0), FIX_C, atol=1e-15)
    assert cost == pytest.approx(FIX_COST_1000, abs=1e-6)


@pytest.mark.parametrize("log_domain", [False, True])
def test_fixture_float32(log_domain):
    # cribo.md §9 precision note: the reference is float32, so "exactly c" means to fp32 rounding.
    P = sinkhorn(FIX_M, FIX_R, FIX_C, log_domain=log_domain)
    assert P.dtype == jnp.float32
    P = np.asarray(P)
    np.testing.assert_allclose(P.sum(0), FIX_C, atol=1e-6)
    np.testing.assert_allclose(P, FIX_P, atol=1e-6)
    np.testing.assert_allclose(P.sum(1), FIX_ROWS, atol=1e-6)
    assert float(transport_cost(P, np.float32(FIX_M))) == pytest.approx(FIX_COST_5, abs=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_numpy_mirror_on_random_batched_masked_inputs(dtype):
    rng = np.random.default_rng(0)
    M, r, c, live = _random_problem(rng, (3, 4), 24, 7, dtype)
    want = mirror(M, r, c, live)
    with jax.enable_x64(dtype == np.float64):
        got = np.asarray(sinkhorn(M, r, c, live=live))
        got_log = np.asarray(sinkhorn(M, r, c, live=live, log_domain=True))
    assert got.dtype == dtype
    tol = dict(rtol=2e-5, atol=1e-9) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(got, want, **tol)
    np.testing.assert_allclose(got_log, want, **tol)
    # and the reference's lam / n_iters arguments
    np.testing.assert_allclose(
        np.asarray(sinkhorn(M, r, c, live=live, lam=7.5, n_iters=3)),
        mirror(M, r, c, live, lam=7.5, n_iters=3),
        rtol=2e-5 if dtype == np.float32 else 1e-6,
        atol=1e-9,
    )


def test_batched_equals_per_sample_loop():
    rng = np.random.default_rng(1)
    M, r, c, live = _random_problem(rng, (2, 3), 40, 6)
    got = np.asarray(sinkhorn(M, r, c, live=live))
    for b in range(2):
        for h in range(3):
            one = np.asarray(sinkhorn(M[b, h], r[b, h], c[b, h], live=live[b, h]))
            np.testing.assert_allclose(got[b, h], one, rtol=1e-6, atol=1e-12)
    # marginals broadcast over the leading axes: one r for all samples, one c per image
    r0, c0 = r[0, 0], c[:, :1]
    got = np.asarray(sinkhorn(M, r0, c0))
    for b in range(2):
        for h in range(3):
            one = np.asarray(sinkhorn(M[b, h], r0, c0[b, 0]))
            np.testing.assert_allclose(got[b, h], one, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("log_domain", [False, True])
def test_masked_columns_get_zero_mass_and_match_the_compacted_solve(log_domain):
    rng = np.random.default_rng(2)
    M, r, c, live = _random_problem(rng, (5,), 30, 8)
    M_garbage = M.copy()
    for s in range(5):  # anything may sit in dead slots (croc.md §5)
        M_garbage[s][:, ~live[s]] = [np.inf, np.nan, -np.inf][s % 3]
    P = np.asarray(sinkhorn(M_garbage, r, c, live=live, log_domain=log_domain))
    assert np.isfinite(P).all()
    assert (P[np.broadcast_to(~live[:, None, :], P.shape)] == 0).all()  # exactly 0, not 1e-8
    cols = P.sum(-2)
    np.testing.assert_allclose(cols[live], c[live], rtol=1e-5, atol=1e-7)
    for s in range(5):
        keep = np.flatnonzero(live[s])
        compact = np.asarray(sinkhorn(M[s][:, keep], r[s], c[s][keep], log_domain=log_domain))
        np.testing.assert_allclose(P[s][:, keep], compact, rtol=1e-5, atol=1e-10)
    cost = np.asarray(transport_cost(P, M_garbage, live=live))
    want = np.asarray(transport_cost(P, M))  # dead P is 0, finite M there contributes 0
    np.testing.assert_allclose(cost, want, rtol=1e-6)


def test_log_domain_agrees_with_plain():
    # Same iterates at every finite iteration count, not only at convergence (module docstring).
    with jax.enable_x64(True):
        M, r, c = (jnp.asarray(x, jnp.float64) for x in (FIX_M, FIX_R, FIX_C))
        for n in (1, 2, 5, 20):
            plain = np.asarray(sinkhorn(M, r, c, n_iters=n))
            logd = np.asarray(sinkhorn(M, r, c, n_iters=n, log_domain=True))
            np.testing.assert_allclose(logd, plain, rtol=1e-12, atol=1e-20)
    rng = np.random.default_rng(3)
    M, r, c, live = _random_problem(rng, (4, 2), 64, 10)
    for n in (5, 300):
        with jax.enable_x64(True):
            M64, r64, c64 = M.astype(np.float64), r.astype(np.float64), c.astype(np.float64)
            ref = np.asarray(sinkhorn(M64, r64, c64, live=live, n_iters=n))
            logd = np.asarray(sinkhorn(M64, r64, c64, live=live, n_iters=n, log_domain=True))
        np.testing.assert_allclose(logd, ref, rtol=1e-10, atol=1e-20)
        # float32 differs from it by rounding only (measured max relative error on entries > 1e-6:
        # plain 1.2e-6 / 9.5e-6, log 2.2e-6 / 3.5e-6 at 5 / 300 iterations)
        for log_domain in (False, True):
            got = np.asarray(sinkhorn(M, r, c, live=live, n_iters=n, log_domain=log_domain))
            np.testing.assert_allclose(got, ref, rtol=2e-5 if n == 5 else 1e-4, atol=1e-9)
    # after 300 iterations the rows have converged too
    np.testing.assert_allclose(ref.sum(-1), r, rtol=1e-6)


def test_log_domain_survives_underflow_where_plain_hits_the_guard():
    # exp(-20 * (M + 10)) <= exp(-200) underflows in fp32; a constant shift does not change the
    # plan mathematically (P is scale invariant), so the log variant must give the unshifted plan.
    M = np.float32(FIX_M) + 10.0
    plain = np.asarray(sinkhorn(M, FIX_R, FIX_C))
    assert (plain == np.float32(1e-8)).all()
    logd = np.asarray(sinkhorn(M, FIX_R, FIX_C, log_domain=True))
    np.testing.assert_allclose(logd, np.asarray(sinkhorn(FIX_M, FIX_R, FIX_C)), rtol=1e-4, atol=1e-9)
    # a large lam: plain rows underflow entirely, log stays finite with columns at c
    logd = np.asarray(sinkhorn(FIX_M, FIX_R, FIX_C, lam=500.0, n_iters=50, log_domain=True))
    assert np.isfinite(logd).all()
    # fp32 exponents of magnitude ~lam: column sums hold to ~1e-5 rather than ~1e-7 here
    np.testing.assert_allclose(logd.sum(0), FIX_C, atol=2e-5)


def test_nan_guard_is_the_reference_one():
    rng = np.random.default_rng(4)
    M, r, c, live = _random_problem(rng, (3,), 12, 5)
    M[0, 3, 1] = -10.0  # exp(200) overflows in fp32: inf / inf -> NaN spreads over the sample
    live[2] = False  # all columns dead: no mass at all, and no NaN either
    P = np.asarray(sinkhorn(M, r, c, live=live))
    dead0 = np.broadcast_to(~live[0], P[0].shape)
    assert (P[0][~dead0] == np.float32(1e-8)).all() and (P[0][dead0] == 0).all()
    assert (P[2] == 0).all()
    np.testing.assert_allclose(P[1], np.asarray(sinkhorn(M[1], r[1], c[1], live=live[1])))  # isolated
    raw = np.asarray(sinkhorn(M, r, c, live=live, nan_value=None))
    assert np.isnan(raw[0][~dead0]).all() and (raw[0][dead0] == 0).all()
    np.testing.assert_allclose(raw[1], P[1])
    # the reference's torch.nan_to_num also maps +inf to the largest finite value; the guard
    # value is configurable
    P = np.asarray(sinkhorn(M, r, c, live=live, nan_value=0.0))
    assert (P[0] == 0).all()


def test_compiles_once_for_a_fixed_shape():
    rng = np.random.default_rng(5)
    problems = [_random_problem(rng, (3, 2), 11, 5) for _ in range(3)]
    step = jax.jit(lambda M, r, c, live: sinkhorn(M, r, c, live=live))
    for M, r, c, live in problems:
        step(M, r, c, live).block_until_ready()
    assert step._cache_size() == 1
    M, r, c, live = problems[0]
    sinkhorn(M, r, c, live=live)  # eager calls go through one cached executable as well
    size = sk._solve._cache_size()
    for M, r, c, live in problems:
        sinkhorn(M, r, c, live=live)
    assert sk._solve._cache_size() == size


def test_no_implicit_transfers():
    rng = np.random.default_rng(6)
    M, r, c, live = (jax.device_put(x) for x in _random_problem(rng, (2,), 9, 4))
    with jax.transfer_guard("disallow"):
        P = sinkhorn(M, r, c, live=live, log_domain=True)
        sinkhorn(M, r, c, live=live).block_until_ready()
        transport_cost(P, M, live).block_until_ready()


def test_low_precision_inputs_are_solved_in_float32():
    rng = np.random.default_rng(7)
    M, r, c, _ = _random_problem(rng, (2,), 16, 4, dead=False)
    M16 = jnp.asarray(M, jnp.bfloat16)
    P = sinkhorn(M16, r, c)
    assert P.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(P), np.asarray(sinkhorn(M16.astype(jnp.float32), r, c)))


_M, _R, _C = np.zeros((2, 4, 3)), np.full((2, 4), 0.25), np.full((2, 3), 1 / 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_iters=0), "n_iters must be >= 1"),
        (dict(n_iters=-3), "n_iters must be >= 1"),
        (dict(n_iters=2.0), "n_iters must be a Python int"),
        (dict(n_iters=True), "n_iters must be a Python int"),
        (dict(lam=0.0), "lam must be a finite number > 0"),
        (dict(lam=-20), "lam must be a finite number > 0"),
        (dict(lam=float("nan")), "lam must be a finite number > 0"),
        (dict(lam=float("inf")), "lam must be a finite number > 0"),
        (dict(lam="20"), "lam must be a real number"),
        (dict(lam=None), "lam must be a real number"),
        (dict(nan_value="x"), "nan_value must be a number or None"),
        (dict(M=np.zeros(4)), r"M must have shape \(\.\.\., N, K\)"),
        (dict(M=np.zeros((2, 0, 3))), r"M must have shape \(\.\.\., N, K\)"),
        (dict(M=_M.astype(complex)), "M must be a real array"),
        (dict(r=np.full((2, 5), 0.2)), r"r must have shape \(\.\.\., 4\)"),
        (dict(r=np.full((3, 4), 0.25)), r"r must have shape \(\.\.\., 4\) with leading axes"),
        (dict(c=np.full((2, 4), 0.25)), r"c must have shape \(\.\.\., 3\)"),
        (dict(c=np.float64(1.0)), r"c must have shape \(\.\.\., 3\)"),
        (dict(live=np.ones((2, 4), bool)), r"live must have shape \(\.\.\., 3\)"),
        (dict(live=np.ones((5, 2, 3), bool)), r"live must have shape \(\.\.\., 3\)"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    args = dict(M=_M, r=_R, c=_C)
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(ValueError, match=match):
        sinkhorn(args["M"], args["r"], args["c"], **kwargs)


def test_traced_lam_and_bad_cost_shapes_raise():
    with pytest.raises(ValueError, match="lam must be a concrete number"):
        jax.jit(lambda lam: sinkhorn(_M, _R, _C, lam=lam))(20.0)
    with pytest.raises(ValueError, match="P and M must have the same shape"):
        transport_cost(np.zeros((2, 4, 3)), np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="live must have shape"):
        transport_cost(np.zeros((2, 4, 3)), np.zeros((2, 4, 3)), live=np.ones((2, 4), bool))
