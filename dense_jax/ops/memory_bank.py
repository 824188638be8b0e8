"""CrIBo's memory bank as pure arrays sharded over the 'data' mesh axis (cribo.md §5).

State (a dict, carried in the train state's aux and checkpointed with it):

- ``objects`` (2, R, B, K, D) float32: raw teacher object representations, bank 1 (view 1)
  and bank 2 (view 2), rows aligned (the two views of one object share an index);
- ``valid`` (R, B, K) bool: the slot holds a valid object;
- ``image`` (R, B) int32: id of the image each slot came from (its position in the training
  stream, step·B + i; −1 − age for the initial buffer), for NN identities and pictures;
- ``ptr`` () int32: the ring row written next.

B is the global batch and R = ⌈S / B⌉: a ring of R rows of B image slots; one step writes row
``ptr`` with its B images in batch order. The B axis carries the logical name "batch", so each
device holds the slots of the images it processes and writes them without communication (the
layout does not depend on the mesh). FIFO by whole images as the reference: an image's *age*
is steps_ago·B + i (the reference's newest-first order, batch order within a step), and only
images of age < S count (`live`), so R·B − S surplus slots of the oldest row are ignored and,
when B ≥ S, only the first S images of the batch are kept, as the reference does.

Initial state (``init``): ``reference`` = U[0, 1) everywhere and counted valid, the buffer's
image r (0 = newest) at age r; ``empty`` = nothing valid. The search runs on the state before
the step's enqueue (the batch never matches itself).

Search (`search`): for every query q (view v) the index of argmax_slot ⟨q̂, M̂_v[slot]⟩ over
live slots of bank v (cosine), ties to the lowest index. Under `jax.shard_map` each device
scans its own slots ``chunk`` image columns of a ring row at a time with a running max /
argmax (no queries × S·K matrix, no normalised copy of the bank), then the devices agree
by ``pmax`` / ``pmin``; the matched entries of both banks are fetched from their owner by a
masked ``psum`` (exact: the other devices add zeros). Queries (B·K per view, small) are
replicated; the bank never moves. Compute per device equals the reference's (all queries
× its 1/n of the bank).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from dense_jax.ops.clustering import unit

INITS = ("reference", "empty")
_NO_MATCH = jnp.iinfo(jnp.int32).max


def ring_rows(num_images: int, batch: int) -> int:
    """R = ⌈S / B⌉ ring rows of B image slots."""
    return -(-num_images // batch)


def bytes_per_device(num_images: int, batch: int, k: int, dim: int, n_data: int) -> int:
    """Bytes of the bank state on one device of an `n_data`-way 'data' axis."""
    slots = ring_rows(num_images, batch) * (batch // n_data)
    return slots * k * (2 * dim * 4 + 1) + slots * 4


def init(num_images: int, batch: int, k: int, dim: int, mode: str, rng) -> dict:
    """The initial bank (module docstring), leaves boxed with their logical axis names."""
    if mode not in INITS:
        raise ValueError(f"bank init must be one of {INITS}, got {mode!r}")
    rows = ring_rows(num_images, batch)
    shape = (2, rows, batch, k, dim)
    if mode == "reference":
        objects, valid = jax.random.uniform(rng, shape, jnp.float32), jnp.ones(shape[1:4], bool)
    else:
        objects, valid = jnp.zeros(shape, jnp.float32), jnp.zeros(shape[1:4], bool)
    return {
        "objects": nn.LogicallyPartitioned(objects, names=(None, None, "batch", None, None)),
        "valid": nn.LogicallyPartitioned(valid, names=(None, "batch", None)),
        "image": nn.LogicallyPartitioned(-1 - ages(jnp.int32(0), rows, batch), names=(None, "batch")),
        "ptr": jnp.zeros((), jnp.int32),
    }


def ages(ptr, rows: int, batch: int) -> jax.Array:
    """(R, B) age of every image slot when ``ptr`` is the row written next (0 = newest)."""
    steps_ago = (ptr - 1 - jnp.arange(rows, dtype=jnp.int32)) % rows
    return steps_ago[:, None] * batch + jnp.arange(batch, dtype=jnp.int32)[None]


def live(bank: dict, num_images: int) -> jax.Array:
    """(R, B, K) slots that count: valid and of an image among the newest S."""
    rows, batch = bank["image"].shape
    return bank["valid"] & (ages(bank["ptr"], rows, batch) < num_images)[..., None]


class Match(NamedTuple):
    index: jax.Array  # (2, Q) int32 flat slot (row·B + column)·K + object of each view's match
    found: jax.Array  # (2, Q) bool: bank v had a live slot
    same: jax.Array  # (2, Q, D): bank v's entry at view v's match (the cross-image target)
    other: jax.Array  # (2, Q, D): the other bank's entry there (the other view, for the cycle)
    image: jax.Array  # (2, Q) int32 image id of the match


def search(bank: dict, queries, *, num_images: int, mesh, chunk: int = 0, dtype=jnp.float32) -> Match:
    """Cosine NN of view-v queries (2, Q, D) in bank v over live slots (module docstring).

    ``chunk``: at most this many image columns scanned per step on a device (the largest
    divisor of its B / n columns that fits); 0 = all of them, one ring row per step. The
    similarity temporary is (2, Q, chunk·K). ``dtype``: of the unit vectors in the similarity
    matmul (accumulated in float32); "bfloat16" is the counterpart of the reference's fp16
    autocast (near-ties may then resolve differently). The fetched entries stay float32."""
    rows, batch = bank["image"].shape
    width = batch // mesh.shape["data"]
    chunk = max(c for c in range(1, min(chunk or width, width) + 1) if width % c == 0)
    spec = {"objects": P(None, None, "data"), "valid": P(None, "data"), "image": P(None, "data"), "ptr": P()}

    def local(bank, queries):
        return _search_local(bank, queries, num_images=num_images, batch=batch, chunk=chunk, dtype=dtype)

    out = jax.shard_map(local, mesh=mesh, in_specs=(spec, P()), out_specs=P(), check_vma=False)(
        bank, queries.astype(jnp.float32)
    )
    return Match(*out)


def _search_local(bank, queries, *, num_images, batch, chunk, dtype):
    objects = bank["objects"]
    _, rows, width, k, dim = objects.shape
    first = lax.axis_index("data") * width  # global column of this device's first slot
    age = lax.dynamic_slice_in_dim(ages(bank["ptr"], rows, batch), first, width, axis=1)
    ok = bank["valid"] & (age < num_images)[..., None]
    q = unit(queries).astype(dtype)
    per_row = width // chunk

    def scan_chunk(carry, part):
        best, arg = carry
        entries, ok_part, j = part  # (2, chunk, K, D), (chunk, K), chunk number
        keys = unit(entries.reshape(2, chunk * k, dim)).astype(dtype)
        sims = jnp.einsum("vqd,vsd->vqs", q, keys, preferred_element_type=jnp.float32)
        sims = jnp.where(ok_part.reshape(1, 1, -1), sims, -jnp.inf)
        top, at = jnp.max(sims, axis=-1), jnp.argmax(sims, axis=-1).astype(jnp.int32)
        better = top > best
        index = ((j // per_row) * batch + first + (j % per_row) * chunk) * k + at
        return (jnp.where(better, top, best), jnp.where(better, index, arg)), None

    start = (jnp.full(q.shape[:2], -jnp.inf), jnp.zeros(q.shape[:2], jnp.int32))
    parts = jnp.moveaxis(objects.reshape(2, rows * per_row, chunk, k, dim), 1, 0)
    xs = (parts, ok.reshape(rows * per_row, chunk, k), jnp.arange(rows * per_row, dtype=jnp.int32))
    (best, arg), _ = lax.scan(scan_chunk, start, xs)
    top = lax.pmax(best, "data")
    index = lax.pmin(jnp.where(best == top, arg, _NO_MATCH), "data")
    found = top > -jnp.inf
    row = jnp.clip(index // (batch * k), 0, rows - 1)
    col = (index // k) % batch - first
    mine = found & (col >= 0) & (col < width)
    col, obj = jnp.clip(col, 0, width - 1), index % k
    entries = objects[:, row, col, obj]  # (2 banks, 2 query views, Q, D)
    entries = lax.psum(jnp.where(mine[None, ..., None], entries, 0.0), "data")
    image = lax.psum(jnp.where(mine, bank["image"][row, col], 0), "data")
    views = jnp.arange(2)
    return jnp.where(found, index, -1), found, entries[views, views], entries[1 - views, views], image


def enqueue(bank: dict, objects, valid, image, *, mesh) -> dict:
    """The bank after writing one step's B images into ring row ``ptr``: objects (2, B, K, D),
    valid (B, K), image ids (B,). Each device writes the images it holds; invalid objects are
    stored as zeros and masked."""
    rows = bank["image"].shape[0]
    spec = {"objects": P(None, None, "data"), "valid": P(None, "data"), "image": P(None, "data"), "ptr": P()}

    def local(bank, objects, valid, image):
        ptr = bank["ptr"]
        objects = jnp.where(valid[None, ..., None], objects, 0.0).astype(jnp.float32)
        return {
            "objects": lax.dynamic_update_slice(bank["objects"], objects[:, None], (0, ptr, 0, 0, 0)),
            "valid": lax.dynamic_update_slice(bank["valid"], valid[None], (ptr, 0, 0)),
            "image": lax.dynamic_update_slice(bank["image"], image[None].astype(jnp.int32), (ptr, 0)),
            "ptr": (ptr + 1) % rows,
        }

    in_specs = (spec, P(None, "data"), P("data"), P("data"))
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=spec)(bank, objects, valid, image)


def back_search(jumped, keys, keys_valid, group: int) -> jax.Array:
    """Cycle check (cribo.md §5): (B, K) whether the nearest valid key (cosine) of each jumped
    vector, among the group·K keys of its group of ``group`` consecutive images, is its own slot.

    jumped (B, K, D): the other view's entry of each object's match; keys (B, K, D): this
    batch's objects of that other view; keys_valid (B, K)."""
    b, k, dim = keys.shape
    y = unit(jumped.astype(jnp.float32)).reshape(b // group, group * k, dim)
    z = unit(keys.astype(jnp.float32)).reshape(b // group, group * k, dim)
    sims = jnp.einsum("gqd,gsd->gqs", y, z)
    sims = jnp.where(keys_valid.reshape(b // group, 1, group * k), sims, -jnp.inf)
    return (jnp.argmax(sims, axis=-1) == jnp.arange(group * k)).reshape(b, k)
