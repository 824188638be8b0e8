"""Checkpoint integrity: a fingerprint of every saved array, checked after each restore.

Orbax's OCDBT format checks its own b-tree nodes (CRC-32C) but not the array bytes: flipped
bytes inside a value restore silently (issue 18). So every checkpoint's ``meta`` item carries
`fingerprint(state)`, computed on the devices when the checkpoint is written, and `mismatches`
compares it with the fingerprint of what was restored.

The fingerprint of one array is two 32-bit sums over its elements' raw bits (floats and keys
as their bit patterns), each element weighted by a function of its position: ``Σ wᵢ·(2i+1)``
and ``Σ mix(wᵢ ⊕ mix(i))`` (mod 2³², ``mix`` the murmur3 finaliser). Any change of a single
element changes the first sum; the second, non-linear one makes changes of many elements
cancel with probability ~2⁻³². Integer sums do not depend on the order of addition, so the
fingerprint is the same on every mesh and on every host (restore may reshard).

`layout_problem` names the files without which a step cannot be restored (orbax 0.12's
layout: ``state/_METADATA``, ``state/manifest.ocdbt``, ``meta/metadata`` and one
``data/process_<i>-of-<n>.json`` per host).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_GOLDEN = 0x9E3779B1


def _mix(h: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: every input bit affects every output bit."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _words(x: jax.Array) -> jax.Array:
    """The raw bits of `x` as uint32 (one word per element; 64-bit types give two)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    if x.dtype.itemsize >= 4:
        return lax.bitcast_convert_type(x, jnp.uint32)
    narrow = {1: jnp.uint8, 2: jnp.uint16}[x.dtype.itemsize]
    return lax.bitcast_convert_type(x, narrow).astype(jnp.uint32)


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
    words = _words(x)
    index = jnp.zeros(words.shape, jnp.uint32)
    stride = 1
    for dim in reversed(range(words.ndim)):  # the flat (row-major) position of each element
        index = index + lax.broadcasted_iota(jnp.uint32, words.shape, dim) * jnp.uint32(stride)
        stride = stride * words.shape[dim] % 2**32
    linear = jnp.sum(words * (2 * index + 1), dtype=jnp.uint32)
    mixed = jnp.sum(_mix(words ^ _mix(index + jnp.uint32(_GOLDEN))), dtype=jnp.uint32)
    return jnp.stack([linear, mixed])


_fingerprints = jax.jit(lambda tree: jax.tree.map(_leaf_fingerprint, tree))


def leaf_name(path: tuple) -> str:
    """``params/backbone/block_0/attn/qkv/kernel`` for a `jax.tree_util` key path."""
    parts = []
    for key in path:
        for attr in ("name", "key", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return "/".join(parts)


def fingerprint(tree: Any) -> dict[str, str]:
    """{leaf name: 16 hex digits} of every array in `tree` (device arrays, any sharding).

    Explicit device→host transfer of 8 bytes per leaf; call it outside the step."""
    sums = _fingerprints(tree)
    out = {}
    for path, value in jax.tree_util.tree_flatten_with_path(sums)[0]:
        words = np.asarray(jax.device_get(value.addressable_shards[0].data))
        out[leaf_name(path)] = f"{int(words[0]):08x}{int(words[1]):08x}"
    return out


def mismatches(expected: dict[str, str], restored: Any) -> list[str]:
    """Names of the leaves of `restored` whose fingerprint differs from `expected` (or that
    `expected` lacks); a partial restore checks the leaves it restored."""
    return [name for name, value in fingerprint(restored).items() if expected.get(name) != value]


def layout_problem(step_dir: str, process_count: int) -> str | None:
    """The first file a restore of the step in `step_dir` needs that is missing, else None."""
    needed = ["state/_METADATA", "state/manifest.ocdbt", "meta/metadata"]
    needed += [f"data/process_{i}-of-{process_count}.json" for i in range(process_count)]
    for name in needed:
        if not os.path.isfile(os.path.join(step_dir, name)):
            return f"{name} is missing"
    return None
