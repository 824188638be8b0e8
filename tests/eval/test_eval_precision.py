"""Evaluations that claim exact results run their matmuls at Precision.HIGHEST (issue 16 item 5):
on GPU the default precision is TF32, so a DEFAULT dot would make scores device-dependent. The
CPU cannot show the difference numerically, so the lowered programs are checked instead."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from dense_jax.eval.retrieval import kernels
from dense_jax.ops import kmeans
from dense_jax.ops.knn import knn


def _dot_precisions(lowered) -> list[str]:
    """The precision config of every dot_general in a lowered program's StableHLO."""
    text = lowered.as_text()
    dots = [line for line in text.splitlines() if "dot_general" in line]
    assert dots, "no dot_general in the program"
    return [
        m.group(0) if (m := re.search(r"precision(?:_config)? = \[[^\]]*\]", d)) else "DEFAULT" for d in dots
    ]


def _all_highest(lowered) -> bool:
    return all(p.count("HIGHEST") == 2 for p in _dot_precisions(lowered))


def test_hummingbird_aggregation_and_knn_are_highest():
    rng = np.random.default_rng(0)
    q, k, classes, patch, size = 2 * 16, 5, 3, 2, 8
    sims = jnp.asarray(rng.normal(size=(q, k)), jnp.float32)
    idx = jnp.asarray(rng.integers(0, 64, size=(q, k)), jnp.int32)
    counts = jnp.asarray(rng.integers(0, 4, size=(64, classes)), jnp.uint16)
    gt = jnp.zeros((2, size, size), jnp.int32)
    args = (sims, idx, jnp.ones(q), counts, gt, jnp.ones(2, bool), patch, classes, 255, 0.02)
    assert _all_highest(kernels.aggregate.lower(*args))
    search = jax.jit(lambda a, m: knn(a, m, k, metric="dot"))
    assert _all_highest(search.lower(jnp.ones((4, 8)), jnp.ones((64, 8))))


def test_precision_check_sees_a_default_dot():
    default = jax.jit(lambda a, b: jnp.einsum("qk,qkc->qc", a, b))
    assert not _all_highest(default.lower(jnp.ones((4, 3)), jnp.ones((4, 3, 2))))


def test_kmeans_is_highest():
    assert _all_highest(kmeans.nearest_centroid.lower(jnp.ones((16, 4)), jnp.ones((3, 4))))
    lowered = kmeans._kmeans.lower(
        jax.random.key(0), jnp.ones((16, 4)), jnp.ones(16, bool), 3, 2, 1, "random", False
    )
    assert _all_highest(lowered)
