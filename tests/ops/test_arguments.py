"""Public ops check their arguments at the boundary: a zero or negative size, an unknown name
or mismatched shapes raise a ValueError naming the argument, never a ZeroDivisionError, a
shape error from deep inside XLA or a silently empty result."""

import jax.numpy as jnp
import numpy as np
import pytest

from dense_jax.ops import kmeans, knn, resize, roi_align, sinkhorn, sorting

X = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8)), jnp.float32)
FEATS = jnp.zeros((2, 6, 6, 4))
BOXES = jnp.asarray([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 5.0, 5.0]])
MEMORY = jnp.asarray(np.random.default_rng(1).normal(size=(40, 8)), jnp.float32)

CASES = {
    "soft_sort row_chunk=0": (lambda: sorting.soft_sort(X, row_chunk=0), "row_chunk"),
    "soft_sort row_chunk=-1": (lambda: sorting.soft_sort(X, row_chunk=-1), "row_chunk"),
    "soft_sort network": (lambda: sorting.soft_sort(X, network="bubble"), "network"),
    "soft_sort relaxation": (lambda: sorting.soft_sort(X, relaxation="gauss"), "relaxation"),
    "soft_sort n=1": (lambda: sorting.soft_sort(X[:, :1]), "n >= 2"),
    "knn chunk_size=0": (lambda: knn.knn(X, MEMORY, 2, chunk_size=0), "chunk_size"),
    "knn group_size=0": (lambda: knn.knn(X, MEMORY, 2, group_size=0), "group_size"),
    "knn widths": (lambda: knn.knn(X, MEMORY[:, :5], 2), "width"),
    "knn k=0": (lambda: knn.knn(X, MEMORY, 0), "k=0"),
    "kmeans n_init=0": (lambda: kmeans.kmeans(X, 2, n_init=0), "n_init"),
    "kmeans n_iter=-1": (lambda: kmeans.kmeans(X, 2, n_iter=-1), "n_iter"),
    "kmeans 1-D": (lambda: kmeans.kmeans(X[0], 2), "(N, D)"),
    "nearest_centroid widths": (lambda: kmeans.nearest_centroid(X, X[:, :5]), "width"),
    "roi_align output_size=0": (lambda: roi_align.roi_align(FEATS, BOXES, output_size=0), "output_size"),
    "roi_align box coords": (lambda: roi_align.roi_align(FEATS, BOXES[:, :3]), "boxes"),
    "roi_align batch": (lambda: roi_align.roi_align(FEATS, BOXES[:1]), "boxes"),
    "roi_align features": (lambda: roi_align.roi_align(FEATS[0], BOXES), "features"),
    "roi_align max_samples=0": (lambda: roi_align.roi_align(FEATS, BOXES, max_samples=0), "max_samples"),
    "nearest_resize size=0": (lambda: resize.nearest_resize(np.zeros((4, 4)), 0), "size"),
    "bilinear_upsample size=-2": (lambda: resize.bilinear_upsample(FEATS, -2), "size"),
    "sinkhorn n_iters=0": (
        lambda: sinkhorn.sinkhorn(jnp.zeros((4, 2)), jnp.ones(4) / 4, jnp.ones(2) / 2, n_iters=0),
        "n_iters",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_arguments_raise_a_clear_value_error(name):
    call, word = CASES[name]
    with pytest.raises(ValueError, match=None) as err:
        call()
    assert word in str(err.value), str(err.value)
