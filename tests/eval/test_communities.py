"""Community detection for CBFE (evaluation.md §3c, dense_jax/eval/communities.py): skimage's
co-occurrence offsets, hand-computed co-occurrence rows, edges, a hand-built graph whose
communities Infomap recovers, the module-count error and the aggregation over seeds.

Infomap is the optional ``cbfe`` extra; it is in the ``test`` extra, and tests/conftest.py lists
it among the references, so a missing ``infomap`` fails these tests in CI instead of skipping.
"""

import sys
import types

import numpy as np
import pytest

from dense_jax.eval import communities, foreground

# skimage 0.26.0 graycomatrix, measured on a 5×5 map of unique values: the (row, col) offset of
# each (distance, angle) pair for distances (1, 2) and the reference's 8 angles.
SKIMAGE_OFFSETS = [
    (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1),
    (0, 2), (1, 1), (2, 0), (1, -1), (0, -2), (-2, -1), (-2, 0), (-1, 1),
]  # fmt: skip
COMMUNITIES = [(0, 1, 2), (3, 4, 5), (6, 7)]
BACKGROUND = 8


def _pixel_loop_counts(m, levels):
    """graycomatrix(...).sum((2, 3)) by its definition, one pixel pair at a time."""
    counts = np.zeros((levels, levels), np.int64)
    h, w = m.shape
    for dr, dc in SKIMAGE_OFFSETS:
        for r in range(h):
            for c in range(w):
                if 0 <= r + dr < h and 0 <= c + dc < w:
                    counts[m[r, c], m[r + dr, c + dc]] += 1
    return counts


def _community_maps(n_images=12, size=12):
    """Background frame around vertical stripes (2 px) of one community's clusters per image."""
    rng = np.random.default_rng(0)
    maps = np.full((n_images, size, size), BACKGROUND)
    for n, m in enumerate(maps):
        members = COMMUNITIES[n % len(COMMUNITIES)]
        order = rng.permutation(len(members))
        for x in range(size - 4):
            m[2:-2, 2 + x] = members[order[(x // 2) % len(members)]]
    return maps


def test_offsets_are_skimages():
    assert communities.offsets() == SKIMAGE_OFFSETS


def test_pair_counts_equal_the_pixel_loop():
    rng = np.random.default_rng(1)
    for shape in [(9, 13), (3, 2), (1, 5)]:
        m = rng.integers(0, 6, shape)
        np.testing.assert_array_equal(communities.pair_counts(m, 6), _pixel_loop_counts(m, 6))


def test_cooccurrence_by_hand():
    """[0 1 2]: each row splits evenly over the other two; [0 0 0] has no off-diagonal pair (no
    appearance counted); [0 1 1]: 0 and 1 only see each other, 2 is absent. Rows averaged over
    the images where they are non-empty: 0 and 1 over 2 images, 2 over 1."""
    maps = np.array([[[0, 1, 2]], [[0, 0, 0]], [[0, 1, 1]]])
    expected = [[0, 0.75, 0.25], [0.75, 0, 0.25], [0.5, 0.5, 0]]
    np.testing.assert_allclose(communities.cooccurrence(maps, 3), expected)


def test_edges_need_both_directions():
    a = np.array([[0, 0.3, 0.05], [0.2, 0, 0.08], [0.9, 0.07, 0]])
    assert communities.edges(a, 0.07) == [(0, 1, 0.2), (1, 2, 0.07)]


def test_hand_built_communities_are_recovered():
    pytest.importorskip("infomap")
    maps = _community_maps()
    graph = communities.edges(communities.cooccurrence(maps, BACKGROUND + 1), 0.07)
    for seed in (1, 2, 3):
        module = communities.detect(graph, BACKGROUND + 1, seed, 1.2, len(COMMUNITIES))
        group = communities.compact(module, len(COMMUNITIES) + 1)
        fg = group[:BACKGROUND]
        truth = np.repeat(np.arange(len(COMMUNITIES)), [len(c) for c in COMMUNITIES])
        np.testing.assert_array_equal(fg[:, None] == fg[None], truth[:, None] == truth[None])
        assert len(np.unique(group)) in (3, 4)  # the background node joins a community or not


def test_too_many_modules_is_an_error():
    np.testing.assert_array_equal(communities.compact(np.array([5, 0, 5, 9]), 3), [1, 0, 1, 2])
    with pytest.raises(ValueError, match="found 4 groups .* more than the 3 classes"):
        communities.compact(np.array([1, 2, 3, 4, 1]), 3)


def test_disconnected_cliques_exceed_the_module_limit():
    pytest.importorskip("infomap")
    cliques = [
        (i, j, 1.0) for g in range(5) for i in range(3 * g, 3 * g + 3) for j in range(i + 1, 3 * g + 3)
    ]
    module = communities.detect(cliques, 15, 1, 1.2, 5)
    assert len(np.unique(module)) == 5
    with pytest.raises(ValueError, match="found 5 groups"):
        communities.compact(module, 4)


def test_missing_infomap_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "infomap", None)
    with pytest.raises(ImportError, match=r"pip install 'dense_jax\[cbfe\]'"):
        communities.detect([(0, 1, 1.0)], 2, 1, 1.2, 2)


def test_seeds_are_aggregated():
    """Three seeds scoring 0.5, 0.7, 0.6: mean 0.6, population std sqrt(0.02/3), best 0.7; the
    merged val map handed to the scorer is the known partition of the val clusters."""
    pytest.importorskip("infomap")
    maps = _community_maps()
    val = slice(6, None)
    scores, seen = iter([0.5, 0.7, 0.6]), []

    def scorer(merged):
        seen.append(merged)
        return next(scores), None

    cfg = types.SimpleNamespace(k=BACKGROUND, weight_threshold=0.07, markov_time=1.2, seeds=(1, 2, 3))
    out = foreground.community_scores(maps, val, cfg, len(COMMUNITIES), scorer)
    assert out["mean"] == pytest.approx(0.6) and out["best"] == 0.7
    assert out["std"] == pytest.approx(np.sqrt(0.02 / 3))
    assert out["per_seed"] == [0.5, 0.7, 0.6] and out["seeds"] == [1, 2, 3]
    assert len(seen) == 3 and all(g in (3, 4) for g in out["groups_per_seed"])
    fg = maps[val] != BACKGROUND
    truth = np.searchsorted([2, 5, 7], maps[val])  # community of each fg cluster
    for merged in seen:
        a, b = merged[fg], truth[fg]
        np.testing.assert_array_equal(a[:, None] == a[None], b[:, None] == b[None])


def test_cbfe_voc_config_has_the_published_settings():
    from configs.eval import cbfe_voc

    for arg in (None, "demo"):
        cd = cbfe_voc.get_config(arg).cbfe.community
        assert cd.enabled and (cd.weight_threshold, cd.markov_time) == (0.07, 1.2)
        assert len(cd.seeds) == 10 and min(cd.seeds) >= 1  # infomap >= 2.16 rejects seed 0
    assert cbfe_voc.get_config().cbfe.community.k == 189


@pytest.mark.slow
def test_demo_reports_the_community_score(tmp_path):
    """CBFE + CD on the built-in scenes (random backbone): cd_miou is the mean over the seeds."""
    pytest.importorskip("infomap")
    from dense_jax import evaluate
    from tests.eval.test_evaluate import tiny_demo

    c = tiny_demo(("cbfe",))
    c.cbfe.community.update(dict(enabled=True, k=8, seeds=(1, 2)))
    result = evaluate.evaluate(c, str(tmp_path), log=lambda _: None)["cbfe"]
    cd = result["community_detection"]
    assert result["summary"]["cd_miou"] == cd["mean"] == pytest.approx(np.mean(cd["per_seed"]))
    assert len(cd["per_seed"]) == 2 and all(0 < g <= 7 for g in cd["groups_per_seed"])
