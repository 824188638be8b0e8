"""K-means (Lloyd) in JAX for the clustering protocols: K-means / overclustering of frozen val
tokens and CBFE's spherical K-means (evaluation.md §3a, §3c, §9 Clustering).

Reference: faiss ``Kmeans(d, K, niter=100, nredo=5, seed, spherical)``: random-sample init,
``niter`` Lloyd iterations, best of ``nredo`` restarts by inertia. Differences, by design (faiss's
subsampled training and random-sample init are listed as reference weaknesses, §9):
- all rows are used; faiss trains on <= 256*K random rows (sub-sample on the host for parity);
- ``init="kmeans++"`` (scikit-learn's greedy k-means++) is offered behind a flag;
- an empty cluster is re-seeded at the point farthest from its centroid, the e-th empty cluster
  taking the e-th farthest point (scikit-learn's rule; faiss splits a large cluster instead).
Assignment is exact (full argmin over K, ties to the lower centroid id); the iteration count is
fixed (``lax.fori_loop``), with no tolerance-based early stop. Rows may be sharded over a mesh
axis: under jit the centroid sums are global reductions, so the result does not depend on it.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dense_jax.ops import checks

_HI = lax.Precision.HIGHEST


class KMeansResult(NamedTuple):
    centroids: jax.Array  # (K, D) float32
    labels: jax.Array  # (N,) int32; -1 on invalid rows
    inertia: jax.Array  # () float32: sum over valid rows of the squared distance to the centroid


def _sq_dists(x, x_sq, c):
    """(N, K) squared Euclidean distances ||x||^2 - 2 x.c + ||c||^2, clamped at 0."""
    d = x_sq[:, None] - 2.0 * jnp.dot(x, c.T, precision=_HI) + jnp.sum(c * c, -1)[None, :]
    return jnp.maximum(d, 0.0)


def _unit_rows(c):
    return c / jnp.maximum(jnp.linalg.norm(c, axis=-1, keepdims=True), 1e-12)


def _random_init(key, x, valid, k):
    """faiss-style init: k distinct valid rows, uniformly at random."""
    score = jnp.where(valid, jax.random.uniform(key, valid.shape), -1.0)
    return x[lax.top_k(score, k)[1]]


def _sample(u, weights):
    """Indices drawn with probability proportional to ``weights`` by inverse CDF (as sklearn),
    one per uniform number in ``u``."""
    cdf = jnp.cumsum(weights)
    return jnp.minimum(jnp.searchsorted(cdf, u * cdf[-1], side="right"), weights.shape[0] - 1)


def _kmeanspp_init(key, x, x_sq, valid, k):
    """Greedy k-means++ (scikit-learn ``_kmeans_plusplus``, 2 + floor(log k) trials per centre)."""
    n_trials = 2 + int(math.log(k))
    u = jax.random.uniform(key, (k, n_trials))
    first = x[_sample(u[0, :1], valid.astype(x.dtype))]
    centers = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first[0])
    closest = jnp.where(valid, _sq_dists(x, x_sq, first)[:, 0], 0.0)

    def body(i, carry):
        centers, closest = carry
        cand = _sample(u[i], closest)
        d = jnp.where(valid[:, None], jnp.minimum(closest[:, None], _sq_dists(x, x_sq, x[cand])), 0.0)
        best = jnp.argmin(d.sum(0))
        return centers.at[i].set(x[cand[best]]), d[:, best]

    return lax.fori_loop(1, k, body, (centers, closest))[0]


def _lloyd(key, x, valid, k, n_iter, init, spherical):
    """One k-means run: init + ``n_iter`` Lloyd steps. Returns centroids, labels, inertia."""
    x_sq = jnp.sum(x * x, -1)
    if init == "random":
        centers = _random_init(key, x, valid, k)
    else:
        centers = _kmeanspp_init(key, x, x_sq, valid, k)
    if spherical:
        centers = _unit_rows(centers)
    w = valid.astype(x.dtype)

    def assign(c):
        d = _sq_dists(x, x_sq, c)
        return jnp.argmin(d, axis=1).astype(jnp.int32), jnp.min(d, axis=1)

    def step(_, c):
        labels, dmin = assign(c)
        onehot = jax.nn.one_hot(labels, k, dtype=x.dtype) * w[:, None]
        counts = onehot.sum(0)
        sums = jnp.dot(onehot.T, x, precision=_HI)
        means = sums / jnp.maximum(counts, 1.0)[:, None]
        empty = counts == 0

        def reseed(means):
            far = lax.top_k(jnp.where(valid, dmin, -1.0), k)[1]
            rank = jnp.cumsum(empty) - 1
            return jnp.where(empty[:, None], x[far[jnp.clip(rank, 0, k - 1)]], means)

        c = lax.cond(empty.any(), reseed, lambda m: m, means)
        return _unit_rows(c) if spherical else c

    centers = lax.fori_loop(0, n_iter, step, centers)
    labels, _ = assign(centers)
    inertia = jnp.sum(jnp.where(valid, jnp.sum((x - centers[labels]) ** 2, -1), 0.0))
    return centers, jnp.where(valid, labels, -1), inertia


@jax.jit
def nearest_centroid(x, centroids):
    """(N,) int32 id of the nearest centroid of each row (exact; ties to the lower id). Use it to
    label all tokens after fitting on a faiss-style subsample (the protocol trains on at most
    256·K random rows, then gives every token its nearest centroid, §3a)."""
    x = jnp.asarray(x, jnp.float32)
    checks.same_width(("x", "centroids"), x, centroids)
    return jnp.argmin(_sq_dists(x, jnp.sum(x * x, -1), centroids), axis=1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("k", "n_iter", "n_init", "init", "spherical"))
def _kmeans(key, x, valid, k, n_iter, n_init, init, spherical):
    runs = lax.map(lambda kk: _lloyd(kk, x, valid, k, n_iter, init, spherical), jax.random.split(key, n_init))
    best = jnp.argmin(runs[2])
    return KMeansResult(*(r[best] for r in runs))


def kmeans(
    x,
    k: int,
    *,
    n_iter: int = 100,
    n_init: int = 5,
    init: str = "random",
    seed: int = 0,
    spherical: bool = False,
    valid=None,
    mesh: Mesh | None = None,
    axis: str = "data",
) -> KMeansResult:
    """K-means of the rows of ``x`` (N, D); the best of ``n_init`` restarts by inertia (§3a).

    Args:
      k: number of clusters. n_iter: Lloyd iterations (faiss ``niter``). n_init: restarts
        (faiss ``nredo``). init: ``"random"`` (faiss: k distinct random rows) or ``"kmeans++"``.
      seed: seeds the restarts (the protocol runs seeds 0..4). spherical: L2-normalise the
        centroids after the init and every update (faiss ``spherical=True``, used by CBFE's
        foreground clustering, §3c);
        with unit centroids the L2 assignment equals faiss's max-inner-product one.
      valid: optional (N,) bool mask of real rows (padding is ignored everywhere).
      mesh: optional mesh; rows are padded to a multiple of the ``axis`` size and sharded over it.
    Returns:
      :class:`KMeansResult` with labels of the N input rows.
    """
    if init not in ("random", "kmeans++"):
        raise ValueError(f"unknown init {init!r}")
    n_iter, n_init = checks.positive("n_iter", n_iter, minimum=0), checks.positive("n_init", n_init)
    x = jnp.asarray(x, jnp.float32)
    checks.ndim("x", x, 2, "(N, D)")
    n = x.shape[0]
    if not 0 < k <= n:
        raise ValueError(f"need 0 < k={k} <= N={n}")
    valid = jnp.ones((n,), bool) if valid is None else jnp.asarray(valid, bool)
    if mesh is not None:
        pad = -n % mesh.shape[axis]
        x = jax.device_put(jnp.pad(x, ((0, pad), (0, 0))), NamedSharding(mesh, P(axis, None)))
        valid = jax.device_put(jnp.pad(valid, (0, pad)), NamedSharding(mesh, P(axis)))
    res = _kmeans(
        jax.random.key(seed), x, valid, k=k, n_iter=n_iter, n_init=n_init, init=init, spherical=spherical
    )
    return res._replace(labels=res.labels[:n])
