"""Tests of dense_jax.eval.metrics against the hand cases of evaluation.md §6 and the checks of §8."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import ndimage

from dense_jax.eval import metrics as M


def _cm(pred, gt, c_gt, c_pred=None, ignore_index=255):
    return np.asarray(
        M.confusion_matrix(
            jnp.asarray(pred), jnp.asarray(gt), c_gt, ignore_index=ignore_index, num_pred_classes=c_pred
        )
    )


# ---------------------------------------------------------------- §6 hand cases
GT_A = [0, 0, 1, 1, 2, 255]
PRED_A = [0, 1, 1, 1, 2, 0]


def test_case_a_identity():
    cm = _cm(PRED_A, GT_A, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [0, 0, 1]])  # 255 pixel not counted
    r = M.miou_from_confusion(cm)
    np.testing.assert_allclose(r["per_class_iou"], [0.5, 2 / 3, 1.0], atol=1e-6)
    assert r["miou"] == pytest.approx(0.7222222, abs=1e-6)
    assert r["pixel_accuracy"] == pytest.approx(4 / 5)


def test_case_b_absent_class():
    cm = _cm(PRED_A, GT_A, 4)
    assert M.miou_from_confusion(cm, average="all")["miou"] == pytest.approx(0.5416667, abs=1e-6)
    r = M.miou_from_confusion(cm, average="present")
    assert r["miou"] == pytest.approx(0.7222222, abs=1e-6)
    assert np.isnan(r["per_class_iou"][3])


def test_case_c_hungarian():
    cm = _cm([2, 2, 0, 0, 1, 1], [0, 0, 1, 1, 2, 2], 3)
    mapping = M.hungarian_match(cm)
    np.testing.assert_array_equal(mapping, [1, 2, 0])  # pi = {2->0, 0->1, 1->2}
    assert M.miou_from_confusion(cm, mapping)["miou"] == pytest.approx(1.0)
    assert M.miou_from_confusion(cm)["miou"] == pytest.approx(0.0)


def test_case_d_majority():
    cm = _cm([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1], 2, c_pred=3)
    mapping = M.majority_match(cm)
    np.testing.assert_array_equal(mapping, [0, 0, 1])  # cluster 1 ties at 0.5 -> class 0
    np.testing.assert_array_equal(M.remap(np.array([0, 0, 1, 1, 2, 2]), mapping), [0, 0, 0, 0, 1, 1])
    r = M.miou_from_confusion(cm, mapping)
    np.testing.assert_allclose(r["per_class_iou"], [0.75, 2 / 3], atol=1e-6)
    assert r["miou"] == pytest.approx(0.7083333, abs=1e-6)


def test_case_h_boundary_tolerance():
    assert M.boundary_radius((480, 854)) == 8
    assert M.boundary_radius((480, 854), bound_th=3) == 3


# ---------------------------------------------------------------- §8.2-3 matching properties
def _random_seg(rng, c, shape=(4, 16, 16)):
    return rng.integers(0, c, size=shape)


def test_perfect_and_permuted_predictions():
    rng = np.random.default_rng(0)
    gt = _random_seg(rng, 5)
    gt[0, :3] = 255
    perm = rng.permutation(5)
    pred_perm = perm[np.where(gt == 255, 0, gt)]
    cm_id, cm_perm = _cm(gt % 255, gt, 5), _cm(pred_perm, gt, 5)
    for match in (M.identity_match, M.hungarian_match, M.majority_match):
        assert M.miou_from_confusion(cm_id, match(cm_id))["miou"] == pytest.approx(1.0)
    for match in (M.hungarian_match, M.majority_match):
        assert M.miou_from_confusion(cm_perm, match(cm_perm))["miou"] == pytest.approx(1.0)
    assert M.miou_from_confusion(cm_perm)["miou"] < 0.5


def test_relabelling_invariance_and_identity_le_hungarian():
    rng = np.random.default_rng(1)
    gt = _random_seg(rng, 4)
    noisy = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, 4, gt.shape))
    over = noisy * 3 + rng.integers(0, 3, gt.shape)  # 12 clusters
    cm_sq, cm_over = _cm(noisy, gt, 4), _cm(over, gt, 4, c_pred=12)
    hung = M.miou_from_confusion(cm_sq, M.hungarian_match(cm_sq))["miou"]
    maj = M.miou_from_confusion(cm_over, M.majority_match(cm_over))["miou"]
    assert M.miou_from_confusion(cm_sq)["miou"] <= hung + 1e-12
    for seed in range(3):
        p4, p12 = np.random.default_rng(seed).permutation(4), np.random.default_rng(seed).permutation(12)
        cm_a, cm_b = _cm(p4[noisy], gt, 4), _cm(p12[over], gt, 4, c_pred=12)
        assert M.miou_from_confusion(cm_a, M.hungarian_match(cm_a))["miou"] == pytest.approx(hung)
        assert M.miou_from_confusion(cm_b, M.majority_match(cm_b))["miou"] == pytest.approx(maj)


def test_overclustered_perfect_prediction_many_to_one():
    rng = np.random.default_rng(2)
    gt = _random_seg(rng, 3)
    clusters = gt * 4 + rng.integers(0, 4, gt.shape)  # every class split into 4 clusters
    cm = _cm(clusters, gt, 3, c_pred=12)
    mapping = M.majority_match(cm)
    np.testing.assert_array_equal(mapping, np.repeat(np.arange(3), 4))
    assert M.miou_from_confusion(cm, mapping)["miou"] == pytest.approx(1.0)
    # one-to-one cannot merge: the 9 leftover clusters go to background (reference) or nowhere
    assert M.miou_from_confusion(cm, M.hungarian_match(cm))["miou"] < 1.0
    assert (M.hungarian_match(cm, unmatched=-1) == -1).sum() == 9


def test_majority_precision_vs_iou_score():
    # cluster 0 = 10 px of class 0 and 2 px of class 1; class 0 has 100 px, class 1 has 2 px.
    cm = np.array([[10, 90], [2, 0]])
    assert M.majority_match(cm, score="precision")[0] == 0
    assert M.majority_match(cm, score="iou")[0] == 1


def test_ade_style_ignore_zero():
    # C = 4, GT 0 ignored (ADE convention): reference divides by 4, corrected mean over 1..3.
    gt = np.array([0, 1, 1, 2, 2, 3, 3, 0])
    pred = np.array([0, 1, 1, 2, 0, 3, 3, 1])
    cm = _cm(pred, gt, 4, ignore_index=0)
    ious = [0.0, 1.0, 0.5, 1.0]
    assert M.miou_from_confusion(cm)["miou"] == pytest.approx(sum(ious) / 4)
    r = M.miou_from_confusion(cm, average="present", exclude_classes=(0,))
    assert r["miou"] == pytest.approx(2.5 / 3)


# ---------------------------------------------------------------- §8.4-5 masking and streaming
def test_ignore_pixels_never_count():
    rng = np.random.default_rng(3)
    gt = _random_seg(rng, 6)
    gt[rng.random(gt.shape) < 0.3] = 255
    pred_a = _random_seg(rng, 6)
    pred_b = np.where(gt == 255, _random_seg(rng, 6), pred_a)
    np.testing.assert_array_equal(_cm(pred_a, gt, 6), _cm(pred_b, gt, 6))
    assert _cm(pred_a, gt, 6).sum() == (gt != 255).sum()


def test_padded_samples_masked_and_streaming():
    rng = np.random.default_rng(4)
    gt, pred = _random_seg(rng, 5, (8, 8, 8)), _random_seg(rng, 7, (8, 8, 8))
    valid = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)  # last 3 samples are padding
    cm_masked = np.asarray(M.confusion_matrix(pred, gt, 5, valid=valid, num_pred_classes=7))
    np.testing.assert_array_equal(cm_masked, _cm(pred[:5], gt[:5], 5, c_pred=7))
    acc_np, acc_dev = M.ConfusionAccumulator(5, 7), M.ConfusionAccumulator(5, 7)
    for idx in ([3, 1], [0, 4, 2]):  # any batch order
        acc_np.update(pred[idx], gt[idx])
        acc_dev.add(M.confusion_matrix(pred[idx], gt[idx], 5, num_pred_classes=7))
    np.testing.assert_array_equal(acc_np.cm, cm_masked)
    np.testing.assert_array_equal(acc_dev.cm, cm_masked)
    assert acc_np.cm.dtype == np.int64
    assert acc_np.result("majority")["miou"] == pytest.approx(
        M.miou_from_confusion(cm_masked, M.majority_match(cm_masked))["miou"]
    )


def test_sharded_confusion_is_global():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rng = np.random.default_rng(5)
    gt, pred = _random_seg(rng, 21, (16, 12, 12)), _random_seg(rng, 21, (16, 12, 12))
    gt[:, :2] = 255
    valid = np.arange(16) < 13
    shard = NamedSharding(mesh, P("data"))
    args = [jax.device_put(a, shard) for a in (pred, gt, valid)]
    cm = M.confusion_matrix(args[0], args[1], 21, valid=args[2])
    ref = M.ConfusionAccumulator(21)
    ref.update(pred, gt, valid)
    np.testing.assert_array_equal(np.asarray(cm), ref.cm)


# ---------------------------------------------------------------- DAVIS J and F
def _square(shape, top, left, size):
    m = np.zeros(shape, bool)
    m[top : top + size, left : left + size] = True
    return m


def _f_reference(gt, pred, r):
    """Independent F: explicit-loop boundaries (mask away from the image border) and Euclidean
    distance-transform tolerance."""

    def bmap(m):
        h, w = m.shape
        b = np.zeros_like(m)
        for i, j in itertools.product(range(h - 1), range(w - 1)):
            b[i, j] = m[i, j] != m[i, j + 1] or m[i, j] != m[i + 1, j] or m[i, j] != m[i + 1, j + 1]
        return b

    bg, bp = bmap(gt), bmap(pred)
    near_g = ndimage.distance_transform_edt(~bg) <= r
    near_p = ndimage.distance_transform_edt(~bp) <= r
    prec, rec = (bp & near_g).sum() / bp.sum(), (bg & near_p).sum() / bg.sum()
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def test_j_and_f_hand_cases():
    a = _square((60, 80), 10, 10, 20)
    far = _square((60, 80), 30, 50, 15)
    empty = np.zeros_like(a)
    assert M.region_similarity(a, a) == 1.0 and M.boundary_f_measure(a, a) == 1.0
    assert M.region_similarity(a, far) == 0.0 and M.boundary_f_measure(a, far) == 0.0
    assert M.region_similarity(empty, empty) == 1.0 and M.boundary_f_measure(empty, empty) == 1.0
    assert M.region_similarity(a, empty) == 0.0 and M.boundary_f_measure(a, empty) == 0.0
    shifted = _square((60, 80), 10, 12, 20)
    assert M.region_similarity(a, shifted) == pytest.approx(18 * 20 / (22 * 20))
    assert M.boundary_f_measure(a, shifted, bound_th=2) == 1.0  # shift within the tolerance
    assert M.boundary_f_measure(a, shifted, bound_th=1) < 1.0
    void = np.zeros_like(a)
    void[:, 30:] = True  # hides the only disagreement
    assert M.region_similarity(a, shifted, void=void) == pytest.approx(18 / 20)


@pytest.mark.parametrize("shift,r", [(3, 1), (5, 2), (7, 3), (4, 4)])
def test_f_shifted_square_vs_independent(shift, r):
    a = _square((50, 50), 12, 10, 20)
    b = _square((50, 50), 12 + shift // 2, 10 + shift, 20)
    assert M.boundary_f_measure(a, b, bound_th=r) == pytest.approx(_f_reference(a, b, r), abs=1e-12)


def test_f_batched_frames():
    a = _square((40, 40), 5, 5, 10)
    frames_gt = np.stack([a, a, np.zeros_like(a)])
    frames_pr = np.stack([a, np.roll(a, 3, axis=1), a])
    f = M.boundary_f_measure(frames_gt, frames_pr, bound_th=1)
    assert f.shape == (3,) and f[0] == 1.0 and 0 < f[1] < 1 and f[2] == 0.0
    np.testing.assert_allclose(M.region_similarity(frames_gt, frames_pr), [1.0, 70 / 130, 0.0])
