"""Tests for the differentiable sorting networks (neco.md §4 and §7, checks 1-6)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dense_jax.ops.sorting import NETWORKS, RELAXATIONS, network_tables, soft_sort

PARITY_SIZES = (2, 3, 5, 8, 33, 49)
PARITY_STEEPNESS = (1.0, 10.0, 100.0)


def _layers(network, n):
    """Layers as sorted lists of (a, b, min_wire) comparators and pass-through wires."""
    a, b, is_min, is_pass = network_tables(network, n)
    layers = []
    for ell in range(a.shape[0]):
        comps = sorted(
            {(int(a[ell, w]), int(b[ell, w]), w) for w in range(n) if is_min[ell, w] and not is_pass[ell, w]}
        )
        passes = sorted(int(w) for w in np.flatnonzero(is_pass[ell]))
        layers.append((comps, passes))
    return layers


# ---------------------------------------------------------------- network tables (§7.1)


@pytest.mark.parametrize("n", range(2, 65))
def test_layer_counts(n):
    k = math.ceil(math.log2(n))
    assert network_tables("bitonic", n)[0].shape == (k * (k + 1) // 2, n)
    assert network_tables("odd_even", n)[0].shape == (n, n)
    assert network_tables("bitonic", 49)[0].shape[0] == 21


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 8, 9, 16, 33, 49, 64])
def test_each_wire_once_per_layer(network, n):
    a, b, is_min, is_pass = network_tables(network, n)
    wires = np.arange(n)
    for ell in range(a.shape[0]):
        al, bl, ml, pl = a[ell], b[ell], is_min[ell], is_pass[ell]
        assert np.all(al[pl] == wires[pl]) and np.all(bl[pl] == wires[pl])
        comp = ~pl
        assert np.all(al[comp] < bl[comp])
        assert np.all((al[comp] == wires[comp]) | (bl[comp] == wires[comp]))
        partner = np.where(al == wires, bl, al)
        # the partner wire reads the same comparator and takes the other output
        assert np.all(al[partner[comp]] == al[comp]) and np.all(bl[partner[comp]] == bl[comp])
        assert np.all(ml[partner[comp]] != ml[comp])
        assert not np.any(ml[pl])


def test_bitonic_small_layers_match_spec():
    assert _layers("bitonic", 4) == [
        ([(0, 1, 0), (2, 3, 3)], []),
        ([(0, 2, 0), (1, 3, 1)], []),
        ([(0, 1, 0), (2, 3, 2)], []),
    ]
    assert _layers("bitonic", 3) == [
        ([(1, 2, 2)], [0]),
        ([(0, 2, 0)], [1]),
        ([(1, 2, 1)], [0]),
    ]


def test_odd_even_layers():
    assert _layers("odd_even", 4) == [([(0, 1, 0), (2, 3, 2)], []), ([(1, 2, 1)], [0, 3])] * 2
    assert _layers("odd_even", 5)[:2] == [([(0, 1, 0), (2, 3, 2)], [4]), ([(1, 2, 1), (3, 4, 3)], [0])]


# ---------------------------------------------------------------- hand test vectors (§4)

HAND_VECTORS = [  # (x, network, relaxation, beta, expected P rows (leading rows only), sorted)
    (
        [0.3, 0.1],
        "bitonic",
        "cauchy",
        100.0,
        [[0.015902, 0.984098], [0.984098, 0.015902]],
        [0.10318, 0.29682],
    ),
    ([0.3, 0.1], "odd_even", "cauchy", 100.0, [[0.015902, 0.984098], [0.984098, 0.015902]], None),
    ([0.3, 0.1], "bitonic", "logistic_phi", 10.0, [[1 - 0.952152, 0.952152], [0.952152, 1 - 0.952152]], None),
    (
        [0.3, 0.1, 0.2],
        "bitonic",
        "cauchy",
        10.0,
        [[0.165249, 0.213997, 0.620754], [0.626063, 0.217682, 0.156255], [0.208688, 0.568320, 0.222992]],
        [0.153919, 0.199631, 0.246450],
    ),
    (
        [0.3, 0.1, 0.2],
        "odd_even",
        "cauchy",
        10.0,
        [[0.177087, 0.230116, 0.592796], [0.639777, 0.257589, 0.102634], [0.183135, 0.512295, 0.304570]],
        None,
    ),
    (
        [0.3, 0.1, 0.4, 0.2],
        "bitonic",
        "cauchy",
        10.0,
        [
            [0.181855, 0.267960, 0.390410, 0.159774],
            [0.555678, 0.245532, 0.096098, 0.102693],
            [0.102693, 0.096098, 0.245532, 0.555678],
            [0.159774, 0.390410, 0.267960, 0.181855],
        ],
        [0.183156, 0.221462, 0.278538, 0.316844],
    ),
    (
        [0.3, 0.1, 0.4, 0.2],
        "odd_even",
        "cauchy",
        10.0,
        [[0.186929, 0.323061, 0.369173, 0.120837], [0.671313, 0.183347, 0.124420, 0.020921]],
        None,
    ),
    (
        [0.3, 0.1, 0.4, 0.2],
        "bitonic",
        "logistic_phi",
        10.0,
        [[0.063149, 0.155094, 0.678757, 0.103000], [0.811610, 0.129471, 0.036678, 0.022241]],
        None,
    ),
    ([0.3, 0.1, 0.4, 0.2], "bitonic", "logistic", 10.0, [[0.168507, 0.269596, 0.407473, 0.154423]], None),
    (
        [0.3, 0.1, 0.4, 0.2],
        "bitonic",
        "cauchy",
        100.0,
        [[0.016288, 0.032768, 0.920610, 0.030334], [0.942565, 0.031407, 0.015215, 0.010813]],
        None,
    ),
]


@pytest.mark.parametrize("x, network, relaxation, beta, rows, expected_sorted", HAND_VECTORS)
def test_hand_vectors(x, network, relaxation, beta, rows, expected_sorted):
    with jax.enable_x64(True):
        x_sorted, perm = soft_sort(jnp.asarray(x, jnp.float64), network, relaxation, beta)
        assert perm.dtype == jnp.float64
        x_sorted, perm = np.asarray(x_sorted), np.asarray(perm)
    rows = np.asarray(rows)
    np.testing.assert_allclose(perm[: len(rows)], rows, atol=1e-6)
    if expected_sorted is not None:
        np.testing.assert_allclose(x_sorted, expected_sorted, atol=1e-5)
    np.testing.assert_allclose(x_sorted, np.asarray(x) @ perm, atol=1e-12)


def test_hand_loss_vector():
    """§4 loss vector: -mean_j sum_k Pt log Ps for bitonic cauchy beta=10."""
    with jax.enable_x64(True):
        _, p_s = soft_sort(jnp.asarray([0.3, 0.1, 0.4, 0.2], jnp.float64), "bitonic", "cauchy", 10.0)
        _, p_t = soft_sort(jnp.asarray([0.35, 0.05, 0.4, 0.25], jnp.float64), "bitonic", "cauchy", 10.0)
        p_s, p_t = np.asarray(p_s), np.asarray(p_t)
    ce = lambda p, q: -np.mean(np.sum(p * np.log(q), axis=-1))  # noqa: E731
    np.testing.assert_allclose(ce(p_t, p_s), 1.208935, atol=1e-6)
    np.testing.assert_allclose(ce(p_t, p_t), 1.184625, atol=1e-6)
    np.testing.assert_allclose(ce(p_s, p_t), 1.251756, atol=1e-6)


# ---------------------------------------------------------------- properties (§7.2, 7.3, 7.5, 7.6)


@pytest.mark.parametrize("network", NETWORKS)
def test_doubly_stochastic(network):
    x = jax.random.uniform(jax.random.key(0), (len(RELAXATIONS), 16, 49), minval=-1, maxval=1)
    for relaxation, xr in zip(RELAXATIONS, x):
        for beta in (1.0, 100.0):
            x_sorted, perm = soft_sort(xr, network, relaxation, beta)
            perm = np.asarray(perm)
            assert perm.dtype == np.float32
            np.testing.assert_allclose(perm.sum(-1), 1.0, atol=1e-6, err_msg=relaxation)
            np.testing.assert_allclose(perm.sum(-2), 1.0, atol=1e-6, err_msg=relaxation)
            assert perm.min() >= 0.0 and perm.max() <= 1.0, relaxation
            np.testing.assert_allclose(x_sorted, np.einsum("rj,rjk->rk", xr, perm), atol=1e-5)


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 31, 33, 49, 64])
def test_hard_limit(network, n):
    rng = np.random.default_rng(n)
    x = np.stack([rng.permutation(n) for _ in range(8)]).astype(np.float32)
    x_sorted, perm = soft_sort(x, network, "cauchy", 1e6)
    np.testing.assert_allclose(perm, np.eye(n)[x.astype(int)], atol=1e-4)
    np.testing.assert_allclose(x_sorted, np.broadcast_to(np.arange(n), x.shape), atol=1e-3)


def _neco_loss(x_student, x_teacher, network):
    """One-direction CE of §3 step 8, only as a test functional of the sort."""
    _, p_s = soft_sort(x_student, network, "cauchy", 100.0)
    _, p_t = soft_sort(jax.lax.stop_gradient(x_teacher), network, "cauchy", 100.0)
    return -jnp.mean(jnp.sum(p_t * jnp.log(p_s), axis=-1))


@pytest.mark.parametrize("network", NETWORKS)
def test_gradients(network):
    k1, k2 = jax.random.split(jax.random.key(1))
    x_s = jax.random.uniform(k1, (4, 49), minval=-1, maxval=1)
    x_t = x_s + 0.1 * jax.random.normal(k2, x_s.shape)
    loss_grad = jax.jit(jax.value_and_grad(_neco_loss), static_argnums=2)
    loss, grad = loss_grad(x_s, x_t, network)
    assert np.isfinite(loss) and np.all(np.isfinite(grad)) and np.abs(grad).max() > 1e-6
    # at student == teacher the gradient vanishes and the loss is the entropy of P_t
    loss, grad = loss_grad(x_s, x_s, network)
    _, p_t = soft_sort(x_s, network, "cauchy", 100.0)
    np.testing.assert_allclose(loss, -jnp.mean(jnp.sum(p_t * jnp.log(p_t), -1)), rtol=1e-6)
    assert np.abs(grad).max() < 1e-5


def test_no_exact_zeros_fp32():
    x = jax.random.uniform(jax.random.key(2), (512, 49), minval=-1, maxval=1)
    _, perm = soft_sort(x, "bitonic", "cauchy", 100.0)
    assert perm.dtype == jnp.float32 and float(perm.min()) > 0.0


def test_block_stages_follow_the_cost_rule():
    """Bitonic stages are composed in blocks while 2^k * block < n^2; their in-block partner
    tables are involutions without fixed points (every wire is in a comparator)."""
    from dense_jax.ops.sorting.networks import _block_stages

    assert [block for block, _ in _block_stages("bitonic", 49)] == [2, 4, 8, 16, 32]
    assert [block for block, _ in _block_stages("bitonic", 16)] == [2, 4, 8]
    assert _block_stages("bitonic", 2) == () and _block_stages("odd_even", 49) == ()
    for block, partners in _block_stages("bitonic", 49):
        assert partners.shape == (int(math.log2(block)) - 1, block)
        for row in partners:
            assert np.array_equal(row[row], np.arange(block)) and np.all(row != np.arange(block))


def test_fast_arctan():
    """The float32 arctan behind the cauchy swaps: within 2e-7 of the exact arctan over the
    three reduction ranges, at the signed zeros and infinities; derivative 1 / (1 + v^2)."""
    from dense_jax.ops.sorting.relaxations import _arctan_f32

    v = np.concatenate(
        [
            np.linspace(-5, 5, 20001),
            np.geomspace(1e-6, 1e8, 2001),
            -np.geomspace(1e-6, 1e8, 2001),
            [0.0, -0.0, np.inf, -np.inf],
        ]
    )
    v = v.astype(np.float32)
    ours = np.asarray(jax.jit(_arctan_f32)(v), np.float64)
    np.testing.assert_allclose(ours, np.arctan(v.astype(np.float64)), rtol=0, atol=2e-7)
    assert np.array_equal(np.signbit(ours[-4:]), [False, True, False, True])
    slope = jax.vmap(jax.grad(_arctan_f32))(jnp.asarray(v[:20001]))
    np.testing.assert_allclose(slope, 1 / (1 + v[:20001].astype(np.float64) ** 2), rtol=1e-6)


def test_batching_chunking_and_dtype():
    x = jax.random.uniform(jax.random.key(3), (3, 5, 33), minval=-1, maxval=1)
    f = lambda x, chunk: (lambda o: jnp.sum(o[0] ** 2) + jnp.sum(jnp.sin(o[1])))(  # noqa: E731
        soft_sort(x, "bitonic", "logistic", 30.0, row_chunk=chunk)
    )
    full = soft_sort(x, "bitonic", "logistic", 30.0)
    assert full[0].shape == (3, 5, 33) and full[1].shape == (3, 5, 33, 33)
    flat = soft_sort(x.reshape(15, 33), "bitonic", "logistic", 30.0)
    np.testing.assert_allclose(full[1].reshape(15, 33, 33), flat[1], atol=1e-7)
    chunked = soft_sort(x, "bitonic", "logistic", 30.0, row_chunk=4)  # 15 rows: padded chunk
    np.testing.assert_allclose(full[0], chunked[0], atol=1e-6)
    np.testing.assert_allclose(full[1], chunked[1], atol=1e-6)
    np.testing.assert_allclose(jax.grad(f)(x, None), jax.grad(f)(x, 4), rtol=1e-5, atol=1e-6)
    low = soft_sort(x.astype(jnp.bfloat16), "bitonic", "logistic", 30.0)
    assert low[0].dtype == jnp.float32 and low[1].dtype == jnp.float32


def test_rejects_unknown_names():
    with pytest.raises(ValueError):
        soft_sort(jnp.zeros((2, 4)), "bubble")
    with pytest.raises(ValueError):
        soft_sort(jnp.zeros((2, 4)), "bitonic", "softmax")


# ---------------------------------------------------------------- diffsort parity (§7.4)


def _functional_grad(network, relaxation, n):
    """jit(x, beta, w_s, w_p) -> (x_sorted, P, d<w_s, x_sorted> + <w_p, P> / dx)."""

    def f(x, beta, w_s, w_p):
        (x_sorted, perm), vjp = jax.vjp(lambda x: soft_sort(x, network, relaxation, beta), x)
        return x_sorted, perm, vjp((w_s, w_p))[0]

    return jax.jit(f)


@pytest.mark.torch
@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("network", NETWORKS)
def test_diffsort_parity(network, relaxation):
    """Against diffsort 0.2.0: in fp64 both agree to rounding (values and VJPs), so the
    networks and relaxations are the same functions; our fp32 run stays within 5e-5 of the
    exact values at beta <= 100 (diffsort's own fp32 run drifts by a similar 2-3e-5)."""
    pytest.importorskip("diffsort")
    torch = pytest.importorskip("torch")
    from diffsort import DiffSortNet

    rng = np.random.default_rng(0)
    worst_fp64 = worst_grad = worst_fp32 = 0.0
    for n in PARITY_SIZES:
        fn = _functional_grad(network, relaxation, n)
        for beta in PARITY_STEEPNESS:
            x = rng.uniform(-1, 1, (32, n))
            w_s = rng.standard_normal((32, n))
            w_p = rng.standard_normal((32, n, n))
            xt = torch.tensor(x, requires_grad=True)
            ref_sorted, ref_perm = DiffSortNet(network, n, steepness=beta, distribution=relaxation)(xt)
            ((ref_sorted * torch.tensor(w_s)).sum() + (ref_perm * torch.tensor(w_p)).sum()).backward()
            ref_sorted, ref_perm, ref_grad = (
                ref_sorted.detach().numpy(),
                ref_perm.detach().numpy(),
                xt.grad.numpy(),
            )
            with jax.enable_x64(True):
                x_sorted, perm, grad = map(np.asarray, fn(x, beta, w_s, w_p))
            assert perm.dtype == np.float64
            where = f"{network} {relaxation} n={n} beta={beta}"
            np.testing.assert_allclose(x_sorted, ref_sorted, atol=1e-10, err_msg=where)
            np.testing.assert_allclose(perm, ref_perm, atol=1e-10, err_msg=where)
            scale = np.abs(ref_grad).max()
            # diffsort's gaussian backward keeps sigma = 1/beta as a float32 tensor
            grad_tol = 1e-6 if relaxation == "gaussian" else 1e-9
            np.testing.assert_allclose(grad, ref_grad, atol=grad_tol * scale, err_msg=where)
            sorted32, perm32 = soft_sort(jnp.asarray(x, jnp.float32), network, relaxation, beta)
            np.testing.assert_allclose(perm32, ref_perm, atol=5e-5, err_msg=where)
            np.testing.assert_allclose(sorted32, ref_sorted, atol=5e-5, err_msg=where)
            worst_fp64 = max(worst_fp64, np.abs(perm - ref_perm).max())
            worst_grad = max(worst_grad, np.abs(grad - ref_grad).max() / scale)
            worst_fp32 = max(worst_fp32, np.abs(np.asarray(perm32) - ref_perm).max())
    print(
        f"\n[diffsort] {network}/{relaxation}: fp64 max|dP|={worst_fp64:.1e} "
        f"max|dgrad|/max|grad|={worst_grad:.1e}; fp32 max|dP|={worst_fp32:.1e}"
    )
