"""The jitted math of the Hummingbird protocol (evaluation.md §1): per-patch label counts, the
rare-class patch sampling, the kept memory rows and the soft-label aggregation of a query batch."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from dense_jax.eval import metrics
from dense_jax.ops.resize import bilinear_upsample


def patch_counts(mask: jax.Array, patch: int, num_classes: int) -> jax.Array:
    """(B, S, S) labels -> (B, g², C) int32 pixel counts per patch (labels >= C not counted)."""
    b, s, _ = mask.shape
    g = s // patch
    m = mask.astype(jnp.int32)
    rows = (jnp.arange(s) // patch)[:, None] * g + (jnp.arange(s) // patch)[None, :]
    keep = m < num_classes
    flat = jnp.where(keep, rows[None] * num_classes + m, 0).reshape(b, -1)
    counts = jnp.zeros((b, g * g * num_classes), jnp.int32)
    counts = jax.vmap(lambda c, f, k: c.at[f].add(k))(counts, flat, keep.reshape(b, -1).astype(jnp.int32))
    return counts.reshape(b, g * g, num_classes)


def sample_patches(counts: jax.Array, noise: jax.Array, quota: int) -> jax.Array:
    """Indices (B, quota) of the kept patches (§1): score[p] = Σ_{c in p} #patches with c,
    × U(0, 1) noise, keep the ``quota`` smallest; label-less patches score 1e6."""
    present = counts > 0
    freq = present.sum(1, keepdims=True)
    score = jnp.sum(jnp.where(present, freq, 0), -1).astype(jnp.float32)
    score = jnp.where(present.any(-1), score * noise, 1e6)
    return jax.lax.top_k(-score, quota)[1]


@functools.partial(jax.jit, static_argnames=("patch", "num_classes", "quota"))
def memory_rows(feats, mask, keys, patch: int, num_classes: int, quota: int):
    """Kept rows of one memory batch: unit features (B, q, D), uint16 counts (B, q, C), patch
    indices (B, q). ``keys``: one PRNG key per image (seed, epoch, image index)."""
    b, g, _, d = feats.shape
    counts = patch_counts(mask, patch, num_classes)
    flat = feats.reshape(b, g * g, d)
    if quota < g * g:
        noise = jax.vmap(lambda k: jax.random.uniform(k, (g * g,)))(keys)
        idx = sample_patches(counts, noise, quota)
    else:
        idx = jnp.broadcast_to(jnp.arange(g * g), (b, g * g))
    sel = jnp.take_along_axis(flat, idx[..., None], axis=1)
    sel = sel / jnp.maximum(jnp.linalg.norm(sel, axis=-1, keepdims=True), 1e-12)
    return sel, jnp.take_along_axis(counts, idx[..., None], axis=1).astype(jnp.uint16), idx


@functools.partial(jax.jit, static_argnames=("patch", "num_classes", "ignore_index", "temperature"))
def aggregate(
    sims,
    idx,
    qnorm,
    mem_counts,
    gt,
    valid,
    patch: int,
    num_classes: int,
    ignore_index: int,
    temperature: float,
):
    """Soft-label prediction of a query batch and its (C, C) confusion matrix: the neighbours' soft
    labels weighted by softmax(cos / temperature), upsampled bilinearly, argmax (§1)."""
    b, s, _ = gt.shape
    g = s // patch
    w = jax.nn.softmax(sims / qnorm[:, None] / temperature, axis=-1)
    labels = mem_counts[idx].astype(jnp.float32) / (patch * patch)
    # HIGHEST: on GPU the default is TF32, which would make the "exact" protocol device-dependent
    yhat = jnp.einsum("qk,qkc->qc", w, labels, precision=jax.lax.Precision.HIGHEST)
    yhat = yhat.reshape(b, g, g, num_classes)
    pred = jnp.argmax(bilinear_upsample(yhat, s), axis=-1)
    return metrics.confusion_matrix(pred, gt, num_classes, valid=valid, ignore_index=ignore_index), pred
