"""Differentiable sorting networks (neco.md §4): a gather + scan port of diffsort 0.2.0.

``soft_sort`` follows diffsort's convention: for ``x`` of shape ``(..., n)`` it returns
``(x_sorted, P)`` with ``P`` of shape ``(..., n, n)``, ``x_sorted = x @ P`` and
``P[..., j, k]`` the probability that element ``j`` lands at ascending rank ``k``.

A comparator's two outputs give their own input the same weight, so a soft swap is one
``(n,)`` weight per layer and row; the sort runs in two passes: the network on the values,
which yields these weights (``_swap_weights``), then their product P (``_compose_swaps``), with
a hand-written backward pass per layer (``_soft_swap``).

The networks' tables are built in ``networks``, the relaxations f live in ``relaxations``
and the composition of P in ``compose``; this module runs the two passes.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from dense_jax.ops import checks
from dense_jax.ops.sorting.compose import _compose_swaps, _take_partner
from dense_jax.ops.sorting.networks import NETWORKS, _scan_tables, network_tables
from dense_jax.ops.sorting.relaxations import RELAXATIONS, _swap_weight

__all__ = ["NETWORKS", "RELAXATIONS", "network_tables", "soft_sort"]


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
        alpha = _swap_weight(
            jnp.where(is_lower, other - values, values - other), relaxation, steepness, art_lambda
        )
        own = jnp.where(passes, 1.0, jnp.where(keeps_alpha, alpha, 1.0 - alpha))
        return other + own * (values - other), own

    return lax.scan(layer, values, tables)


def _sort_wire_major(values, tables, network, relaxation, steepness, art_lambda, chunked=False):
    """Runs the network on ``values`` ``(n, rows)``; returns it and P ``(n, n, rows)``.

    ``chunked`` (one chunk of ``soft_sort``'s rows): P's layers are recomputed in the backward
    pass instead of kept (the cheap weights are kept either way), and its scans are unrolled.
    """
    values, own = _swap_weights(values, tuple(map(jnp.asarray, tables)), relaxation, steepness, art_lambda)
    compose = jax.checkpoint(_compose_swaps, static_argnums=(2, 3)) if chunked else _compose_swaps
    return values, compose(own, jnp.asarray(tables[0]), network, chunked)


@functools.partial(jax.jit, static_argnames=("network", "relaxation", "row_chunk"))
def soft_sort(
    x,
    network: str = "bitonic",
    relaxation: str = "cauchy",
    steepness=100.0,
    art_lambda=0.25,
    row_chunk: int | None = None,
):
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
    if row_chunk is not None:
        checks.positive("row_chunk", row_chunk)
    x = jnp.asarray(x)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    *batch, n = x.shape
    rows = math.prod(batch)
    tables = _scan_tables(network, n)
    sort = functools.partial(
        _sort_wire_major,
        tables=tables,
        network=network,
        relaxation=relaxation,
        steepness=steepness,
        art_lambda=art_lambda,
    )
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
