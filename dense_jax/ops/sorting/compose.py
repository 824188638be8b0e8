"""P as the product of the network's soft swaps, each with a hand-written backward pass.

A layer's wire permutation (wire -> partner) is an involution, so its transpose (for the
backward pass) is the same gather rather than a scatter-add (``_take_partner``).
Internally P is kept as ``(wire, element, row)``: the partner gathers then move contiguous
slabs, and the backward pass reduces over elements along a non-minor axis, vectorised over rows.
Bitonic stages before the last only mix wires within aligned blocks, so P is block diagonal
there and is composed block by block (``_block_stages``): 15 of the 21 layers for n = 49, at
less than half the dense cost.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from dense_jax.ops.sorting.networks import _block_stages


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
    own_padded = jnp.concatenate([virtual, own[: first_dense + 1]], axis=1)
    perm, first = jnp.ones((1, padded, 1, rows), own.dtype), 0
    for block, later in stages:
        perm = _merge_blocks(perm, _in_blocks(own_padded[first], block))
        if len(later):
            stage_own = _in_blocks(own_padded[first + 1 : first + 1 + len(later)], block)
            perm = _scan_swaps(perm, stage_own, jnp.asarray(later), unroll)
        first += 1 + len(later)
    perm = _merge_blocks(perm, _in_blocks(own_padded[first], 2 * perm.shape[0]))
    while perm.shape[1] > 1:  # the first dense stage's block is not yet all wires
        perm = _merge_blocks(perm, jnp.ones((2 * perm.shape[0], perm.shape[1] // 2, rows), own.dtype))
    return _scan_swaps(perm[-n:, 0, -n:], own[first + 1 :], partners[first + 1 :], unroll)
