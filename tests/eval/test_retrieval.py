"""Hummingbird retrieval (evaluation.md §1, §8.6, §8.9) against an independent numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from dense_jax import prepare
from dense_jax.data import lists
from dense_jax.data import segmentation as seg
from dense_jax.eval import report, retrieval
from dense_jax.ops.knn import knn
from tests.data.test_lists import _fake_voc


# ----------------------------------------------------------------------------- numpy reference
def np_bilinear(x, size):
    """(h, w, C) -> (size, size, C), half-pixel centres, edge clamp (torch align_corners=False)."""
    h, w, _ = x.shape

    def axis(n_in):
        src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, fr = axis(h)
    c0, c1, fc = axis(w)
    top = x[r0][:, c0] * (1 - fc)[None, :, None] + x[r0][:, c1] * fc[None, :, None]
    bottom = x[r1][:, c0] * (1 - fc)[None, :, None] + x[r1][:, c1] * fc[None, :, None]
    return top * (1 - fr)[:, None, None] + bottom * fr[:, None, None]


def np_hbird(mem_feats, mem_labels, query_feats, gt, k, temperature, num_classes, ignore):
    """The reference procedure of §1 for queries (N, g, g, D) and GT (N, S, S)."""
    n, g, _, d = query_feats.shape
    size = gt.shape[-1]
    cm = np.zeros((num_classes, num_classes), np.int64)
    for i in range(n):
        q = query_feats[i].reshape(-1, d).astype(np.float64)
        scores = q @ mem_feats.T.astype(np.float64)
        idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        cos = np.take_along_axis(scores, idx, 1) / np.linalg.norm(q, axis=1, keepdims=True)
        w = np.exp(cos / temperature - (cos / temperature).max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        yhat = np.einsum("qk,qkc->qc", w, mem_labels[idx]).reshape(g, g, num_classes)
        pred = np_bilinear(yhat, size).argmax(-1)
        keep = gt[i] != ignore
        np.add.at(cm, (gt[i][keep], pred[keep]), 1)
    iou = np.zeros(num_classes)
    inter = cm.astype(float)
    union = cm.sum(1, keepdims=True) + cm.sum(0, keepdims=True) - cm
    score = inter / np.maximum(union, 1e-8)
    rows, cols = linear_sum_assignment(1 - score)
    for r, c in zip(rows, cols):  # fold predicted column c into class r
        tp = cm[r, c]
        iou[r] = tp / max(cm[r].sum() + cm[:, c].sum() - tp, 1e-8)
    return cm, iou.mean()


def test_metric_matches_numpy_reference():
    rng = np.random.default_rng(0)
    num_classes, patch, g, d, k, t = 5, 4, 4, 16, 7, 0.02
    mem = rng.normal(size=(300, d)).astype(np.float32)
    mem /= np.linalg.norm(mem, axis=1, keepdims=True)
    counts = rng.multinomial(patch * patch, rng.dirichlet(np.ones(num_classes) * 0.3, 300))
    queries = rng.normal(size=(3, g, g, d)).astype(np.float32)
    gt = rng.integers(0, num_classes, size=(3, g * patch, g * patch)).astype(np.uint8)
    gt[:, :2] = 255

    q = jnp.asarray(queries.reshape(-1, d))
    sims, idx = knn(q, jnp.asarray(mem), k, metric="dot")
    cm, _ = retrieval.aggregate(
        sims,
        idx,
        jnp.linalg.norm(q, axis=-1),
        jnp.asarray(counts, jnp.uint16),
        jnp.asarray(gt),
        jnp.ones(3, bool),
        patch,
        num_classes,
        255,
        t,
    )
    ref_cm, ref_miou = np_hbird(mem, counts / patch**2, queries, gt, k, t, num_classes, 255)
    np.testing.assert_array_equal(np.asarray(cm), ref_cm)
    ours = report.supervised_scores(np.asarray(cm), 255)["miou_hungarian"]
    assert ours == pytest.approx(ref_miou, abs=1e-12)


def test_case_e_weights():
    """§6 E: cosines 1.00 and 0.98 at T = 0.02 -> weights (0.7311, 0.2689)."""
    w = jax.nn.softmax(jnp.array([1.0, 0.98]) / 0.02)
    np.testing.assert_allclose(w, [0.7311, 0.2689], atol=1e-4)


def test_self_retrieval_k1_returns_own_labels():
    """§8.6: memory = the images themselves, all patches, k = 1 -> the soft-label oracle."""
    rng = np.random.default_rng(1)
    num_classes, patch, g, d = 4, 4, 3, 12
    masks = rng.integers(0, num_classes, size=(2, g * patch, g * patch)).astype(np.uint8)
    feats = rng.normal(size=(2, g, g, d)).astype(np.float32)
    keys = jax.random.split(jax.random.key(0), 2)
    mem, counts, idx = retrieval.memory_rows(
        jnp.asarray(feats), jnp.asarray(masks), keys, patch, num_classes, g * g
    )
    np.testing.assert_array_equal(idx, np.broadcast_to(np.arange(g * g), (2, g * g)))
    q = jnp.asarray(feats.reshape(-1, d))
    sims, nn = knn(q, mem.reshape(-1, d), 1, metric="dot")
    np.testing.assert_array_equal(np.asarray(nn[:, 0]), np.arange(2 * g * g))
    _, pred = retrieval.aggregate(
        sims,
        nn,
        jnp.linalg.norm(q, axis=-1),
        counts.reshape(-1, num_classes),
        jnp.asarray(masks),
        jnp.ones(2, bool),
        patch,
        num_classes,
        255,
        0.02,
    )
    own = np.asarray(counts, np.float64).reshape(2, g, g, num_classes) / patch**2
    expected = np.stack([np_bilinear(o, g * patch).argmax(-1) for o in own])
    np.testing.assert_array_equal(np.asarray(pred), expected)


def test_patch_counts_and_case_g():
    """§6 G: 192 pixels of class 0 and 64 of class 15 in a 16×16 patch -> 0.75 e0 + 0.25 e15."""
    mask = np.zeros((1, 32, 32), np.uint8)
    mask[0, :4, :16] = 15
    mask[0, 16:, 16:] = 255  # not counted (>= C)
    counts = np.asarray(retrieval.patch_counts(jnp.asarray(mask), 16, 21))
    assert counts[0, 0, 0] == 192 and counts[0, 0, 15] == 64
    np.testing.assert_allclose(counts[0, 0] / 256, np.eye(21)[0] * 0.75 + np.eye(21)[15] * 0.25)
    assert counts[0, 3].sum() == 0 and counts[0, 1, 0] == 256


def test_sampling_scores_spec_example():
    """§1 example: patches {0}, {0}, {0,15}, {15} -> scores 3, 3, 5, 2; the {15} patch first."""
    counts = np.zeros((1, 4, 21), np.int32)
    counts[0, 0, 0] = counts[0, 1, 0] = 256
    counts[0, 2, 0], counts[0, 2, 15] = 128, 128
    counts[0, 3, 15] = 256
    kept = retrieval.sample_patches(jnp.asarray(counts), jnp.ones((1, 4)), 1)
    assert int(kept[0, 0]) == 3
    # With noise the score is scaled, never the label-less rule; empty patches come last.
    counts[0, 1] = 0
    order = retrieval.sample_patches(jnp.asarray(counts), jnp.full((1, 4), 0.5), 4)
    assert int(order[0, -1]) == 1


def test_balanced_subsets_are_nested_distinct_and_balanced():
    rng = np.random.default_rng(3)
    presence = [np.unique(rng.integers(0, 6, size=3)) for _ in range(400)]
    subsets = retrieval.balanced_subsets(
        presence, (1 / 64, 1 / 8, 1 / 4, 1.0), seed=42, fg_classes=range(1, 6)
    )
    small, mid, big = subsets[1 / 64], subsets[1 / 8], subsets[1 / 4]
    assert set(small) <= set(mid) <= set(big)
    for f, s in subsets.items():
        assert len(set(s)) == len(s) == 5 * round(400 * f / 5)
        per_class = [sum(c in presence[i] for i in s) for c in range(1, 6)]
        assert min(per_class) >= round(400 * f / 5)
    again = retrieval.balanced_subsets(presence, (1 / 64,), seed=42, fg_classes=range(1, 6))
    np.testing.assert_array_equal(again[1 / 64], small)


def test_memory_item_geometry_and_void_mapping():
    rng = np.random.default_rng(0)
    item = {
        "image": np.full((40, 60, 3), 128, np.uint8),
        "mask": np.full((40, 60), 255, np.uint8),
        "index": 7,
    }
    out = retrieval.memory_item(
        item, rng, 32, (0.5, 2.0), (3 / 4, 4 / 3), 0.1, 0.5, 0, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    )
    assert out["image"].shape == (32, 32, 3) and out["mask"].shape == (32, 32)
    assert (out["mask"] == 0).all()  # VOC: void -> background in the memory
    x1, y1, x2, y2 = out["box"]
    assert 0 <= x1 < x2 <= 60 and 0 <= y1 < y2 <= 40
    assert (x2 - x1) * (y2 - y1) >= 0.5 * 40 * 60 - 60  # rejection sampling: area >= 0.5


@pytest.mark.parametrize("num_sbd", [398, 78])
def test_balanced_subsets_are_the_lists_prepare_writes(tmp_path, num_sbd):
    """The protocol's subsets of a reader equal ``python -m dense_jax.prepare``'s lists of the
    same data. Halves round up: 400 images / 8 / 20 classes = 2.5 -> 3 per class, 80 images
    -> 0.5 -> 1 (Python's round() gives 2 and 0)."""
    root = _fake_voc(tmp_path / "VOCdevkit", num_sbd=num_sbd)
    assert prepare.run(["--dataset", "voc", "--root", str(root), "--lists-dir", str(tmp_path / "lists")]) == 0
    reader = seg.open_source("voc", "trainaug", root)
    presence = retrieval.class_presence(reader, 21)
    per_class = {398: 3, 78: 1}[num_sbd]
    for seed in lists.SEEDS:
        subsets = retrieval.balanced_subsets(presence, (1 / 8, 1.0), seed, fg_classes=range(1, 21))
        written = lists.load(tmp_path / "lists", "voc", lists.fraction_name("trainaug", 8, seed))
        assert tuple(reader.ids[i] for i in subsets[1 / 8]) == written
        assert len(written) == 20 * per_class
    with pytest.raises(ValueError, match="leaves no image per class"):
        retrieval.balanced_subsets(presence, (1 / 128,), 42, fg_classes=range(1, 21))
