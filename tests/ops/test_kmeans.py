"""K-means (dense_jax.ops.kmeans) against scikit-learn (evaluation.md §3a, §8.12)."""

import jax
import numpy as np
import pytest
from jax.sharding import AxisType
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from dense_jax.ops.kmeans import kmeans, nearest_centroid


def _mesh():
    return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


def _blobs(centers, n=2000):
    x, y = make_blobs(
        n_samples=n, n_features=8, centers=centers, cluster_std=0.7, center_box=(-10, 10), random_state=0
    )
    return x.astype(np.float32), y, KMeans(centers, n_init=10, random_state=0).fit(x)


def _check_against_sklearn(res, ref):
    labels = np.asarray(res.labels)
    assert adjusted_rand_score(ref.labels_, labels) == 1.0
    assert float(res.inertia) == pytest.approx(ref.inertia_, rel=1e-4)
    # same centroids up to the cluster permutation
    perm = [np.bincount(labels[ref.labels_ == j]).argmax() for j in range(ref.n_clusters)]
    np.testing.assert_allclose(np.asarray(res.centroids)[perm], ref.cluster_centers_, atol=1e-4)


def test_kmeanspp_matches_sklearn_with_masked_rows():
    # 6 blobs plus 16 padding rows that would dominate the clustering if not masked.
    x, y, ref = _blobs(6)
    padded = np.concatenate([x, np.full((16, x.shape[1]), 1e4, np.float32)])
    valid = np.arange(len(padded)) < len(x)
    res = kmeans(padded, 6, n_iter=30, n_init=3, init="kmeans++", seed=0, valid=valid)
    labels = np.asarray(res.labels)
    assert (labels[len(x) :] == -1).all()
    _check_against_sklearn(res._replace(labels=labels[: len(x)]), ref)
    assert adjusted_rand_score(y, labels[: len(x)]) == 1.0
    np.testing.assert_array_equal(np.asarray(nearest_centroid(x, res.centroids)), labels[: len(x)])


def test_random_init_matches_sklearn_sharded_equals_unsharded():
    # faiss-style random init (the reference default) needs restarts: 10, as sklearn's n_init.
    # 1999 rows: the mesh path pads to 2000 and masks the pad row.
    x, _, ref = _blobs(3, n=1999)
    single = kmeans(x, 3, n_iter=30, n_init=10, init="random", seed=0)
    sharded = kmeans(x, 3, n_iter=30, n_init=10, init="random", seed=0, mesh=_mesh())
    assert sharded.centroids.shape == (3, 8) and sharded.labels.shape == (1999,)
    for res in (single, sharded):
        _check_against_sklearn(res, ref)
    np.testing.assert_array_equal(np.asarray(single.labels), np.asarray(sharded.labels))
    np.testing.assert_allclose(np.asarray(single.centroids), np.asarray(sharded.centroids), atol=1e-5)
    assert float(single.inertia) == pytest.approx(float(sharded.inertia), rel=1e-6)


def test_empty_clusters_are_reseeded():
    # 3 distinct points, 40 copies each: a random init often picks two copies of one point, which
    # leaves a cluster empty (ties go to the lower id); re-seeding must still reach inertia 0.
    pts = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]], np.float32)
    x = np.repeat(pts, 40, axis=0)
    for seed in range(6):
        res = kmeans(x, 3, n_iter=5, n_init=1, seed=seed)
        assert float(res.inertia) == 0.0
        assert len(np.unique(np.asarray(res.labels))) == 3


def test_spherical_centroids_are_unit_norm():
    res = kmeans(_blobs(3)[0], 4, n_iter=5, n_init=1, spherical=True)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(res.centroids), axis=1), 1.0, atol=1e-5)
