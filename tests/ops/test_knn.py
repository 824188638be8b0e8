"""Exact k-NN (dense_jax.ops.knn) against numpy brute force (evaluation.md §8.6, §8.8)."""

import jax
import numpy as np
import pytest
from jax.sharding import AxisType

from dense_jax.ops.knn import knn


def _mesh():
    return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


def _brute(queries, memory, k):
    """Stable descending sort: among equal scores the lower memory index comes first."""
    sims = queries @ memory.T
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, idx, axis=1), idx


@pytest.mark.parametrize("use_mesh", [False, True])
@pytest.mark.parametrize("group_size", [4, 64])  # 16 groups > k: grouped pre-selection; 1: plain
def test_integer_scores_with_ties_match_exactly(use_mesh, group_size):
    # Small integers: every score is exact in fp32 and ties are everywhere.
    rng = np.random.default_rng(0)
    queries = rng.integers(-2, 3, (37, 8)).astype(np.float32)
    memory = rng.integers(-2, 3, (1000, 8)).astype(np.float32)  # 1000 % (64 * 8) != 0
    sims, idx = knn(
        queries, memory, k=10, chunk_size=64, group_size=group_size, mesh=_mesh() if use_mesh else None
    )
    ref_s, ref_i = _brute(queries, memory, 10)
    assert (ref_s[:, :-1] == ref_s[:, 1:]).any()  # the data really has ties
    np.testing.assert_array_equal(np.asarray(sims), ref_s)
    np.testing.assert_array_equal(np.asarray(idx), ref_i)


def test_grouped_preselection_keeps_lowest_index_on_ties():
    # Scores = memory values. Group 1 (max 3) outranks group 0 (max 1), yet the tie at 1 must
    # resolve to row 0, not row 5.
    values = np.array([1, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], np.float32)
    sims, idx = knn(np.ones((1, 1), np.float32), values[:, None], k=2, chunk_size=16, group_size=4)
    np.testing.assert_array_equal(np.asarray(idx), [[4, 0]])
    np.testing.assert_array_equal(np.asarray(sims), [[3.0, 1.0]])


@pytest.fixture(scope="module")
def random_10k():
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((1000, 32)).astype(np.float32)
    memory = rng.standard_normal((10_000, 32)).astype(np.float32)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    mn = memory / np.linalg.norm(memory, axis=1, keepdims=True)
    return queries, memory, _brute(qn.astype(np.float64), mn.astype(np.float64), 30)


@pytest.mark.parametrize("use_mesh", [False, True])
def test_cosine_random_10k(random_10k, use_mesh):
    queries, memory, (ref_s, ref_i) = random_10k
    sims, idx = knn(
        queries,
        memory,
        k=30,
        chunk_size=768,
        metric="cosine",
        group_size=8,
        mesh=_mesh() if use_mesh else None,
    )
    np.testing.assert_array_equal(np.asarray(idx), ref_i)
    np.testing.assert_allclose(np.asarray(sims), ref_s, atol=1e-6)


@pytest.mark.parametrize("use_mesh", [False, True])
def test_self_retrieval_k1(use_mesh):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims, idx = knn(x, x, k=1, chunk_size=50, mesh=_mesh() if use_mesh else None)
    np.testing.assert_array_equal(np.asarray(idx)[:, 0], np.arange(300))
    np.testing.assert_allclose(np.asarray(sims)[:, 0], 1.0, atol=1e-6)


@pytest.mark.parametrize("use_mesh", [False, True])
def test_rows_past_num_valid_are_never_returned(use_mesh):
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((5, 4)).astype(np.float32)
    memory = rng.standard_normal((40, 4)).astype(np.float32)
    memory[35:] = 1e6  # pre-padded garbage rows that would win every search
    sims, idx = knn(queries, memory, k=35, chunk_size=5, num_valid=35, mesh=_mesh() if use_mesh else None)
    ref_s, ref_i = _brute(queries, memory[:35], 35)
    np.testing.assert_array_equal(np.asarray(idx), ref_i)
    np.testing.assert_allclose(np.asarray(sims), ref_s, atol=1e-5)


def test_rejects_k_larger_than_memory():
    with pytest.raises(ValueError):
        knn(np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), k=5)
