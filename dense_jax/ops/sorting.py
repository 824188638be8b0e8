"""Differentiable sorting networks (neco.md §4): a gather + scan port of diffsort 0.2.0.

``soft_sort`` follows diffsort's convention: for ``x`` of shape ``(..., n)`` it returns
``(x_sorted, P)`` with ``P`` of shape ``(..., n, n)``, ``x_sorted = x @ P`` and
``P[..., j, k]`` the probability that element ``j`` lands at ascending rank ``k``.

A network layer is stored as four ``(n,)`` tables indexed by *output* wire ``w``
(neco.md §4, "JAX formulation"): the comparator inputs ``A[w] <= B[w]``, whether ``w`` takes
the comparator's min (``MIN``) and whether it passes through unchanged (``PASS``, with
``A = B = w``). Since ``{A[w], B[w]}`` is ``w`` plus its partner, each layer needs a single
gather of the partner wire and an elementwise blend; that permutation is an involution, so
its transpose (for the backward pass) is the same gather rather than a scatter-add.

A comparator's two outputs give their own input the same weight, so a soft swap is one
``(n,)`` weight per layer and row; the sort runs in two passes: the network on the values,
which yields these weights (``_swap_weights``), then their product P (``_compose_swaps``), with
a hand-written backward pass per layer (``_soft_swap``).

Internally P is kept as ``(wire, element, row)``: the partner gathers then move contiguous
slabs, and the backward pass reduces over elements along a non-minor axis, vectorised over rows.
Bitonic stages before the last only mix wires within aligned blocks, so P is block diagonal
there and is composed block by block (``_block_stages``): 15 of the 21 layers for n = 49, at
less than half the dense cost.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

NETWORKS = ("bitonic", "odd_even")
RELAXATIONS = ("cauchy", "logistic", "logistic_phi", "gaussian", "reciprocal", "optimal")


class _LayerBuilder:
    """Collects one layer's comparators into per-output-wire tables."""

    def __init__(self, n: int):
        self.a = np.full(n, -1, np.int32)
        self.b = np.full(n, -1, np.int32)
        self.is_min = np.zeros(n, bool)
        self.is_pass = np.zeros(n, bool)

    def comparator(self, a: int, b: int, min_wire: int) -> None:
        max_wire = b if min_wire == a else a
        for w, is_min in ((min_wire, True), (max_wire, False)):
            self.a[w], self.b[w], self.is_min[w] = a, b, is_min

    def passthrough(self, w: int) -> None:
        self.a[w] = self.b[w] = w
        self.is_pass[w] = True

    def finish(self) -> tuple[np.ndarray, ...]:
        for w in np.flatnonzero(self.a < 0):  # wires that no comparator touched
            self.passthrough(int(w))
        return self.a, self.b, self.is_min, self.is_pass


def _bitonic_layers(n: int) -> list[tuple[np.ndarray, ...]]:
    """Bitonic network; the top ``p = 2^k - n`` padded wires are virtual (neco.md §4)."""
    k = math.ceil(math.log2(n))
    p = 2**k - n
    layers = []
    for s in range(k):
        for t in range(s + 1):
            m = 2 ** (s - t)
            layer = _LayerBuilder(n)
            for i in range(2**k):
                if i % (2 * m) >= m:
                    continue
                j = i + m
                if i >= p:  # both wires real
                    descending = (i // 2 ** (s + 1)) % 2 == 1
                    layer.comparator(i - p, j - p, min_wire=(j if descending else i) - p)
                elif j >= p:  # only the upper wire is real: it passes through
                    layer.passthrough(j - p)
            layers.append(layer.finish())
    return layers


def _odd_even_layers(n: int) -> list[tuple[np.ndarray, ...]]:
    """Odd-even transposition network: ``n`` layers of ascending (i, i+1) comparators."""
    layers = []
    for ell in range(n):
        layer = _LayerBuilder(n)
        for i in range(ell % 2, n - 1, 2):
            layer.comparator(i, i + 1, min_wire=i)
        layers.append(layer.finish())
    return layers


@functools.lru_cache(maxsize=None)
def network_tables(network: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(A, B, MIN, PASS)``, each of shape ``(D, n)``, for ``network`` on ``n`` wires."""
    if n < 2:
        raise ValueError(f"sorting needs n >= 2, got {n}")
    if network == "bitonic":
        layers = _bitonic_layers(n)
    elif network == "odd_even":
        layers = _odd_even_layers(n)
    else:
        raise ValueError(f"unknown sorting network {network!r}; expected one of {NETWORKS}")
    tables = tuple(np.stack(column) for column in zip(*layers))
    for table in tables:
        table.setflags(write=False)
    return tables


@functools.lru_cache(maxsize=None)
def _scan_tables(network: str, n: int) -> tuple[np.ndarray, ...]:
    """Per-wire ``(partner, is_lower, keeps_alpha, PASS)`` derived from the §4 tables.

    ``is_lower``: the wire is the comparator's input ``a``; ``keeps_alpha``: the wire's own
    value gets weight ``alpha`` (true exactly when ``is_lower == MIN``).
    """
    a, b, is_min, is_pass = network_tables(network, n)
    is_lower = a == np.arange(n)
    partner = np.where(is_lower, b, a).astype(np.int32)
    return partner, is_lower, is_lower == is_min, is_pass


@jax.custom_jvp
def _arctan_f32(v):
    """float32 arctan, ~1.4e-7 absolute error, about 7x faster than ``jnp.arctan`` on CPU.

    Cephes' ``atanf`` scheme: ``|v|`` is reduced to ``|t| <= tan(pi/8)`` with ``arctan(v) =
    pi/4 + arctan((v-1)/(v+1))`` or ``pi/2 + arctan(-1/v)``, then a degree-9 odd polynomial.
    """
    a = jnp.abs(v)
    big, mid = a > 2.414213562373095, a > 0.4142135623730950  # tan(3pi/8), tan(pi/8)
    numerator = jnp.where(big, -1.0, jnp.where(mid, a - 1.0, a))
    t = numerator / jnp.where(big, a, jnp.where(mid, a + 1.0, 1.0))
    z = t * t
    poly = (((8.05374449538e-2 * z - 1.38776856032e-1) * z + 1.99777106478e-1) * z
            - 3.33329491539e-1) * z * t + t
    return jnp.copysign(jnp.where(big, jnp.pi / 2, jnp.where(mid, jnp.pi / 4, 0.0)) + poly, v)


_arctan_f32.defjvps(lambda g, _, v: g / (1.0 + v * v))


def _swap_weight(d, relaxation: str, steepness, art_lambda):
    """alpha = f(steepness * d), d = x_b - x_a: the weight of ``x_a`` in the min (neco.md §4)."""
    v = steepness * d
    if relaxation == "cauchy":
        arctan = jnp.arctan if v.dtype == jnp.float64 else _arctan_f32  # fp64: exact parity
        return arctan(v) / jnp.pi + 0.5
    if relaxation == "logistic":
        return jax.nn.sigmoid(v)
    if relaxation == "logistic_phi":
        return jax.nn.sigmoid(v / (jnp.abs(d) + 1e-10) ** art_lambda)
    if relaxation == "gaussian":
        return jax.scipy.special.ndtr(v)
    if relaxation == "reciprocal":
        return 0.5 * (v / (2.0 + jnp.abs(v)) + 1.0)
    if relaxation == "optimal":
        tail = 1.0 / (16.0 * jnp.maximum(jnp.abs(v), 0.25))  # clamped: both branches stay finite
        return jnp.where(v > 0.25, 1.0 - tail, jnp.where(v < -0.25, tail, v + 0.5))
    raise ValueError(f"unknown relaxation {relaxation!r}; expected one of {RELAXATIONS}")


@jax.custom_vjp
def _take_partner(y, partner):
    """``y[partner]`` along axis 0, where ``partner`` is an involution."""
    return jnp.take(y, partner, axis=0, mode="clip")


def _take_partner_fwd(y, partner):
    return _take_partner(y, partner), partner


def _take_partner_bwd(partner, g):
    return _take_partner(g, partner), None  # an involution is its own transpose


_take_partner.defvjp(_take_partner_fwd, _take_partner_bwd)


def _blend(perm, own, partner):
    """Each wire's new row: ``own`` of its own row plus ``1 - own`` of its partner's."""
    other = _take_partner(perm, partner)
    return other + own[..., None, :] * (perm - other)


@jax.custom_vjp
def _soft_swap(perm, own, partner):
    """One layer's soft swap of P ``(wire, element, row)`` with weights ``own`` ``(wire, row)``.

    Assumes, as ``_swap_weights`` guarantees, that a wire and its partner share ``own``: the
    cotangent of ``perm`` is then the same blend applied to the output cotangent.
    """
    return _blend(perm, own, partner)


def _soft_swap_fwd(perm, own, partner):
    return _blend(perm, own, partner), (perm, own, partner)


def _soft_swap_bwd(res, g):
    perm, own, partner = res
    g_own = jnp.sum(g * (perm - _take_partner(perm, partner)), axis=-2)
    return _blend(g, own, partner), g_own, None


_soft_swap.defvjp(_soft_swap_fwd, _soft_swap_bwd)


def _swap_weights(values, tables, relaxation, steepness, art_lambda):
    """Runs the network on ``values`` ``(n, rows)``: the sorted values and, per layer, the
    weight ``own`` ``(D, n, rows)`` each output wire gives its own input.

    A comparator's two outputs give their own input the same weight (``alpha`` when its min
    stays on the lower wire, ``1 - alpha`` when it moves), and the partner gets ``1 - own``;
    a pass-through has ``own = 1`` (neco.md §4).
    """

    def layer(values, table):
        partner, is_lower, keeps_alpha, passes = table
        is_lower, keeps_alpha, passes = is_lower[:, None], keeps_alpha[:, None], passes[:, None]
        other = _take_partner(values, partner)
        alpha = _swap_weight(jnp.where(is_lower, other - values, values - other),
                             relaxation, steepness, art_lambda)
        own = jnp.where(passes, 1.0, jnp.where(keeps_alpha, alpha, 1.0 - alpha))
        return other + own * (values - other), own

    return lax.scan(layer, values, tables)


@functools.lru_cache(maxsize=None)
def _block_stages(network: str, n: int) -> tuple[tuple[int, np.ndarray], ...]:
    """The bitonic stages whose P is composed as blocks: ``(block, partners)`` each.

    Bitonic stage ``s`` only compares wires inside aligned blocks of ``2^(s+1)`` of the
    ``2^k`` padded wires, so up to there P is block diagonal. A stage is composed in blocks
    while that is less work than the dense ``n x n`` P (``2^k * block < n^2``; for n = 49,
    the first 5 of 6 stages). ``partners`` ``(s, block)``: the in-block partner in each of the
    stage's layers after the first (the first merges two blocks: ``_merge_blocks``).
    """
    if network != "bitonic":
        return ()
    padded = 2 ** math.ceil(math.log2(n))
    stages = []
    for s in range(math.ceil(math.log2(n))):
        block = 2 ** (s + 1)
        if padded * block >= n * n:
            break
        strides = 2 ** (s - np.arange(1, s + 1))
        partners = (np.arange(block)[None, :] ^ strides[:, None]).astype(np.int32)
        partners.setflags(write=False)  # cached: shared by every trace
        stages.append((block, partners))
    return tuple(stages)


def _in_blocks(own, block):
    """Weights ``(..., wires, rows)`` on padded wires → ``(..., block, wires / block, rows)``."""
    *lead, wires, rows = own.shape
    return jnp.swapaxes(own.reshape(*lead, wires // block, block, rows), -3, -2)


@jax.custom_vjp
def _merge_blocks(perm, own):
    """A bitonic stage's first layer on block-diagonal P ``(b, blocks, b, rows)``.

    It compares wire ``i`` of each block with wire ``i`` of the next, so neighbouring blocks
    merge into one ``(2b, blocks / 2, 2b, rows)`` block: both wires of a comparator keep
    ``own`` of their own block's row and ``1 - own`` of the other's, in the other half of the
    elements. ``own`` ``(2b, blocks / 2, rows)``; a comparator's two wires share it.
    """
    return _merge_blocks_fwd(perm, own)[0]


def _merge_blocks_fwd(perm, own):
    b, blocks, _, rows = perm.shape
    pairs = perm.reshape(b, blocks // 2, 2, b, rows)
    lower, upper = pairs[:, :, 0], pairs[:, :, 1]
    keep = own[:b, :, None, :]
    lower_wires = jnp.concatenate([keep * lower, (1.0 - keep) * upper], axis=2)
    upper_wires = jnp.concatenate([(1.0 - keep) * lower, keep * upper], axis=2)
    return jnp.concatenate([lower_wires, upper_wires], axis=0), (lower, upper, keep)


def _merge_blocks_bwd(res, g):
    lower, upper, keep = res
    b = lower.shape[0]
    g_ll, g_lu, g_ul, g_uu = g[:b, :, :b], g[:b, :, b:], g[b:, :, :b], g[b:, :, b:]
    g_lower = g_ul + keep * (g_ll - g_ul)
    g_upper = g_lu + keep * (g_uu - g_lu)
    g_keep = jnp.sum((g_ll - g_ul) * lower + (g_uu - g_lu) * upper, axis=-2)
    g_perm = jnp.stack([g_lower, g_upper], axis=2).reshape(b, -1, b, lower.shape[-1])
    return g_perm, jnp.concatenate([g_keep, jnp.zeros_like(g_keep)], axis=0)


_merge_blocks.defvjp(_merge_blocks_fwd, _merge_blocks_bwd)


def _scan_swaps(perm, own, partners, unroll):
    """Applies the soft swaps of stacked layers ``own`` ``(D, *perm.shape[:-2], rows)``."""

    def layer(perm, xs):
        own, partner = xs
        return _soft_swap(perm, own, partner), None

    return lax.scan(layer, perm, (own, partners), unroll=unroll)[0]


def _compose_swaps(own, partners, network, unroll=False):
    """P ``(n, n, rows)`` (wire, element, row): the product of the layers' soft swaps.

    The leading bitonic stages are composed as block-diagonal blocks
    ``(wire, block, element, row)`` on the padded wires (``_block_stages``), the rest dense.
    ``unroll``: unroll the scans over layers. For chunks of rows on CPU this spares slicing each
    layer's residual out of a stacked buffer; for all rows at once the rolled loop is faster,
    as it reuses its large buffers (benchmarks/sorting_cpu.md).
    """
    _, n, rows = own.shape
    stages = _block_stages(network, n)
    if not stages:
        eye = jnp.broadcast_to(jnp.eye(n, dtype=own.dtype)[:, :, None], (n, n, rows))
        return _scan_swaps(eye, own, partners, unroll)
    padded = 2 ** math.ceil(math.log2(n))
    first_dense = sum(1 + len(later) for _, later in stages)
    virtual = jnp.ones((first_dense + 1, padded - n, rows), own.dtype)  # pass-throughs: own = 1
    own_padded = jnp.concatenate([virtual, own[:first_dense + 1]], axis=1)
    perm, first = jnp.ones((1, padded, 1, rows), own.dtype), 0
    for block, later in stages:
        perm = _merge_blocks(perm, _in_blocks(own_padded[first], block))
        if len(later):
            stage_own = _in_blocks(own_padded[first + 1:first + 1 + len(later)], block)
            perm = _scan_swaps(perm, stage_own, jnp.asarray(later), unroll)
        first += 1 + len(later)
    perm = _merge_blocks(perm, _in_blocks(own_padded[first], 2 * perm.shape[0]))
    while perm.shape[1] > 1:  # the first dense stage's block is not yet all wires
        perm = _merge_blocks(perm, jnp.ones((2 * perm.shape[0], perm.shape[1] // 2, rows),
                                            own.dtype))
    return _scan_swaps(perm[-n:, 0, -n:], own[first + 1:], partners[first + 1:], unroll)


def _sort_wire_major(values, tables, network, relaxation, steepness, art_lambda, chunked=False):
    """Runs the network on ``values`` ``(n, rows)``; returns it and P ``(n, n, rows)``.

    ``chunked`` (one chunk of ``soft_sort``'s rows): P's layers are recomputed in the backward
    pass instead of kept (the cheap weights are kept either way), and its scans are unrolled.
    """
    values, own = _swap_weights(values, tuple(map(jnp.asarray, tables)), relaxation, steepness,
                                art_lambda)
    compose = jax.checkpoint(_compose_swaps, static_argnums=(2, 3)) if chunked else _compose_swaps
    return values, compose(own, jnp.asarray(tables[0]), network, chunked)


@functools.partial(jax.jit, static_argnames=("network", "relaxation", "row_chunk"))
def soft_sort(x, network: str = "bitonic", relaxation: str = "cauchy", steepness=100.0,
              art_lambda=0.25, row_chunk: int | None = None):
    """Differentiable ascending sort of the last axis, as diffsort 0.2.0 (neco.md §4).

    Args:
      x: ``(..., n)`` values, sorted as independent rows; computed in at least float32.
      network: ``"bitonic"`` or ``"odd_even"``.
      relaxation: the swap relaxation f, one of ``RELAXATIONS`` (diffsort's ``distribution``).
      steepness: inverse temperature beta; ``beta -> inf`` gives a hard sort.
      art_lambda: lambda of ``logistic_phi`` (unused by the other relaxations).
      row_chunk: if set, rows go through the network ``row_chunk`` at a time (``lax.map``),
        each chunk's P rematerialised in the backward pass. Bounds the per-layer residuals to
        ``row_chunk`` rows and keeps a chunk in cache on CPU (49-98 did best there);
        ``None`` sorts all at once.

    Returns:
      ``(x_sorted, P)``: ``x_sorted = x @ P`` of shape ``(..., n)`` and the doubly stochastic
      ``P`` of shape ``(..., n, n)``, rows indexing elements and columns ascending ranks.
    """
    x = jnp.asarray(x)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    *batch, n = x.shape
    rows = math.prod(batch)
    tables = _scan_tables(network, n)
    sort = functools.partial(_sort_wire_major, tables=tables, network=network,
                             relaxation=relaxation, steepness=steepness, art_lambda=art_lambda)
    x = x.reshape(rows, n)
    if row_chunk is None or row_chunk >= rows:
        values, perm = sort(x.T)
        x_sorted, perm = values.T, jnp.transpose(perm, (2, 1, 0))
    else:
        pad = -rows % row_chunk
        chunks = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, row_chunk, n)
        values, perm = lax.map(functools.partial(sort, chunked=True), jnp.swapaxes(chunks, 1, 2))
        x_sorted = jnp.swapaxes(values, 1, 2).reshape(-1, n)[:rows]
        perm = jnp.transpose(perm, (0, 3, 2, 1)).reshape(-1, n, n)[:rows]
    return x_sorted.reshape(*batch, n), perm.reshape(*batch, n, n)
