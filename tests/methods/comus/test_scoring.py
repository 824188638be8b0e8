"""COMUS evaluation (methods/comus/scoring.py; comus.md §7, §10.9) through its own entry points:
the Scorer's confusion matrix equals a pixel loop, void never counts, a permuted perfect
prediction scores 100, a class split into two ids is 100 under majority vote by IoU but not under
Hungarian, and background is matched like any other id."""

import types

import numpy as np
import pytest

from dense_jax.methods.comus import scoring

VOC_LIKE = types.SimpleNamespace(num_classes=4, background=(0,), ignore_index=255)


def _gt(seed=0, shape=(3, 12, 10)):
    gt = np.random.default_rng(seed).integers(0, 4, shape).astype(np.uint8)
    gt[:, 0, :3] = 255
    return gt


def _score(pred, gt, num_pred=4, match="auto"):
    scorer = scoring.Scorer(VOC_LIKE, num_pred)
    for p, g in zip(pred, gt):
        scorer.add(p, g)
    return scorer, scorer.result(match)


def test_confusion_equals_the_pixel_loop_and_void_never_counts():
    gt = _gt()
    pred = np.random.default_rng(1).integers(0, 5, gt.shape)
    scorer, _ = _score(pred, gt, num_pred=5)
    loop = np.zeros((4, 5), np.int64)
    for g, p in zip(gt.ravel(), pred.ravel()):
        if g != 255:
            loop[g, p] += 1
    np.testing.assert_array_equal(scorer.acc.cm, loop)
    other = np.where(gt == 255, 4 - pred % 4, pred)  # anything on void pixels
    np.testing.assert_array_equal(_score(other, gt, num_pred=5)[0].acc.cm, loop)


def test_permuted_perfect_prediction_and_background_matched_to_any_id():
    gt = _gt()
    perm = np.array([2, 0, 3, 1])  # background (GT 0) is predicted as id 2
    _, out = _score(perm[np.where(gt == 255, 0, gt)], gt)
    assert out["matching"] == "hungarian" and out["miou"] == pytest.approx(1.0)
    assert out["mapping"][2] == 0  # not pinned to id 0


def test_split_class_is_perfect_for_majority_vote_only():
    gt = _gt()
    clean = np.where(gt == 255, 0, gt)
    split = np.where((clean == 3) & (np.arange(10) % 2 == 0), 4, clean)  # class 3 -> ids 3 and 4
    _, majority = _score(split, gt, num_pred=5)
    assert majority["matching"] == "majority" and majority["miou"] == pytest.approx(1.0)
    _, hungarian = _score(split, gt, num_pred=5, match="hungarian")
    assert hungarian["per_class_iou"][3] < 1.0
    np.testing.assert_allclose(hungarian["per_class_iou"][1:3], 1.0)
    assert hungarian["per_class_iou"][0] < 1.0  # the unmatched id goes to background (the references)


def test_min_labelled_filter_leaves_out_and_counts_small_gt():
    """COCO parity (comus.md §7): GT with < 5 foreground pixels (void and background excluded) is
    not scored; the confusion matrix is that of the other images alone."""
    big = np.zeros((4, 4), np.uint8)
    big[:2] = 1  # 8 foreground pixels
    small = np.zeros((4, 4), np.uint8)
    small[0, :4] = 255
    small[1, :4] = 2  # 4 foreground pixels, 4 void
    pred = np.ones((4, 4), np.uint8)
    scorer, out = _score([pred, pred], [big, small], num_pred=4)
    assert out["n_images"] == 2 and out["n_below_min_labelled"] == 0
    filtered = scoring.Scorer(VOC_LIKE, 4, min_labelled=5)
    for g in (big, small):
        filtered.add(pred, g)
    only_big = scoring.Scorer(VOC_LIKE, 4)
    only_big.add(pred, big)
    np.testing.assert_array_equal(filtered.acc.cm, only_big.acc.cm)
    assert filtered.result()["n_images"] == 1 and filtered.result()["n_below_min_labelled"] == 1
