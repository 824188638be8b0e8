"""CrIBo's fixed-K joint-view clustering (teacher side, no gradient) as one static-shape op.

What it computes (cribo.md §4, in the released code's form). Per image b: X (2N, D) = the
L2-normalised final-LN patch tokens of view 1 then view 2, E (2N, 2) their positions.

- Start: r = 1/2N, c = 1/K; K distinct seed tokens drawn uniformly without replacement
  (Gumbel-top-k on zero logits); C = X[seeds]; label ℓ_n = k for seed k, K ("unassigned")
  for every other token.
- ``n_iter`` (5) times:
  1. Σ = X Cᵀ;
  2. T[n, k] = min {d(n, l) : ℓ_l = k, d(n, l) > 0} (`positional_cost`): an empty set gives
     a placeholder 0, then μ = mean over (n, k) of T, placeholders ← μ, T ← T / max T;
  3. M = −Σ + α_pos·T, min–max normalised over a group of ``norm_group`` images (CrOC's
     `clustering.group_minmax`: the reference normalises over the per-device batch);
  4. P = the CrOC Sinkhorn (`sinkhorn.sinkhorn`, λ = 20, 5 iterations);
  5. hard assignment ℓ_n = argmax_k P[n, k];
  6. c_k ∝ |cluster k| + 0.01 (uniform only in the first solve, [P≠C]);
  7. C = L2-normalise(Aᵀ X) (an empty cluster has C = 0 and similarity 0 to every token).
- Output, from the last iteration: per view v, Â_v = A_v / s_v with s_v,k = |cluster k ∩ v|
  (s := 1 where 0), and object k valid iff s_1,k > 0 and s_2,k > 0.

Static shapes (cribo.md §4 "Static-shape formulation"). The reference builds a
(B, 2N, 2N, K) tensor for T; here T is a `jax.ops.segment_min` over the token labels of the
(B, 2N, 2N) distance matrix (K + 1 segments per image, the "unassigned" one dropped). Tokens
with tied row maxima of P (measure zero) belong to several clusters in the reference; here
the argmax takes the first. All float32; the loop is a ``lax.fori_loop``; no host syncs.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from dense_jax.ops.clustering import group_minmax, unit
from dense_jax.ops.sinkhorn import sinkhorn

_HI = lax.Precision.HIGHEST


class CrIBoClusters(NamedTuple):
    assign: jax.Array  # (B, 2N, K) float32: Â, hard assignment l1-normalised per view and cluster
    valid: jax.Array  # (B, K) bool: the cluster has tokens in both views
    labels: jax.Array  # (B, 2N) int32: cluster of every token


def pairwise_distances(positions) -> jax.Array:
    """(B, 2N, 2N) Euclidean distances between the token positions (B, 2N, 2)."""
    diff = positions[:, :, None, :] - positions[:, None, :, :]
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


def positional_cost(dist, labels, k: int) -> jax.Array:
    """T (B, 2N, K) of cribo.md §4 step 2 from distances (B, 2N, 2N) and labels (B, 2N) in
    [0, K] (K = unassigned): the min distance to another member at positive distance, empty
    sets replaced by the per-image mean μ, then divided by the per-image max."""
    b, n2 = labels.shape
    far = jnp.where(dist > 0, dist, jnp.inf)  # self and co-located tokens excluded
    segments = (labels + (k + 1) * jnp.arange(b)[:, None]).reshape(-1)
    # Rows of `far` are the members l (d is symmetric); segment over their labels, per image.
    tmin = jax.ops.segment_min(far.reshape(b * n2, n2), segments, num_segments=b * (k + 1))
    t = jnp.swapaxes(tmin.reshape(b, k + 1, n2)[:, :k], 1, 2)
    empty = ~jnp.isfinite(t)
    t = jnp.where(empty, 0.0, t)
    t = jnp.where(empty, jnp.mean(t, axis=(1, 2), keepdims=True), t)
    top = jnp.max(t, axis=(1, 2), keepdims=True)
    return t / jnp.where(top > 0, top, 1.0)


def per_view_assignment(labels, k: int) -> tuple[jax.Array, jax.Array]:
    """(Â (B, 2N, K), valid (B, K)) of hard labels (B, 2N): one-hot columns divided by their
    count within each view; valid iff the cluster has tokens in both views (cribo.md §4)."""
    b, n2 = labels.shape
    hard = jax.nn.one_hot(labels, k, dtype=jnp.float32).reshape(b, 2, n2 // 2, k)
    sizes = jnp.sum(hard, axis=2, keepdims=True)  # (B, 2, 1, K)
    assign = (hard / jnp.where(sizes > 0, sizes, 1.0)).reshape(b, n2, k)
    return assign, (sizes[:, 0, 0] > 0) & (sizes[:, 1, 0] > 0)


def cribo_cluster(
    tokens,
    positions,
    key=None,
    *,
    k: int,
    lam_pos,
    norm_group: int | None,
    n_iter: int = 5,
    sinkhorn_lambda: float = 20.0,
    sinkhorn_iters: int = 5,
    seeds=None,
) -> CrIBoClusters:
    """CrIBo clustering of B images (module docstring; cribo.md §4).

    Args:
      tokens: (B, 2N, D) final-LN patch tokens, view 1 then view 2 (normalised here).
      positions: (B, 2N, 2) token positions (x, y) in original-image pixels.
      key: PRNG key of the uniform seeds; unused if ``seeds`` is given.
      k: number of clusters K (reference ``n_tokens``), 1 <= K <= 2N.
      lam_pos: α_pos, weight of the positional cost (a float or a traced scalar).
      norm_group: images per min–max normalisation group (must divide B); None = all B.
      n_iter: outer iterations (reference 5).
      seeds: optional (B, K) distinct token indices (tests).
    """
    tokens, positions = jnp.asarray(tokens), jnp.asarray(positions)
    b, n2, _ = tokens.shape
    if positions.shape != (b, n2, 2) or n2 % 2:
        raise ValueError(
            f"need tokens (B, 2N, D) and positions (B, 2N, 2); got {tokens.shape}, {positions.shape}"
        )
    if not 1 <= k <= n2:
        raise ValueError(f"k = {k} must be in [1, 2N = {n2}]")
    group = b if norm_group is None else norm_group
    if group < 1 or b % group:
        raise ValueError(f"norm_group = {norm_group} must divide the number of images B = {b}")
    if seeds is None:
        if key is None:
            raise ValueError("need a PRNG key when no explicit seeds are given")
        seeds = lax.top_k(jax.random.gumbel(key, (b, n2)), k)[1]
    return _cluster(
        tokens,
        positions,
        jnp.asarray(seeds, jnp.int32),
        jnp.asarray(lam_pos, jnp.float32),
        k=k,
        group=group,
        n_iter=int(n_iter),
        lam=float(sinkhorn_lambda),
        sinkhorn_iters=int(sinkhorn_iters),
    )


@functools.partial(jax.jit, static_argnames=("k", "group", "n_iter", "lam", "sinkhorn_iters"))
def _cluster(tokens, positions, seeds, lam_pos, *, k, group, n_iter, lam, sinkhorn_iters):
    x = unit(tokens.astype(jnp.float32))
    b, n2, _ = x.shape
    dist = pairwise_distances(positions.astype(jnp.float32))
    r = jnp.full((b, n2), 1.0 / n2, jnp.float32)
    live = jnp.ones((b, k), bool)
    labels = jnp.full((b, n2), k, jnp.int32)
    labels = labels.at[jnp.arange(b)[:, None], seeds].set(jnp.arange(k, dtype=jnp.int32))
    centroids = jnp.take_along_axis(x, seeds[:, :, None], axis=1)
    c = jnp.full((b, k), 1.0 / k, jnp.float32)

    def body(_, carry):
        centroids, labels, c = carry
        sim = jnp.einsum("bnd,bkd->bnk", x, centroids, precision=_HI)
        cost = group_minmax(-sim + lam_pos * positional_cost(dist, labels, k), live, group)
        plan = sinkhorn(cost, r, c, lam=lam, n_iters=sinkhorn_iters)
        labels = jnp.argmax(plan, axis=-1).astype(jnp.int32)
        hard = jax.nn.one_hot(labels, k, dtype=jnp.float32)
        sizes = jnp.sum(hard, axis=1) + 0.01
        c = sizes / jnp.sum(sizes, axis=1, keepdims=True)
        centroids = unit(jnp.einsum("bnk,bnd->bkd", hard, x, precision=_HI))
        return centroids, labels, c

    _, labels, _ = lax.fori_loop(0, n_iter, body, (centroids, labels, c))
    assign, valid = per_view_assignment(labels, k)
    return CrIBoClusters(assign, valid, labels)
