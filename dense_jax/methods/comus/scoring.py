"""COMUS evaluation (comus.md §7): dataset-level confusion of predicted ids against GT, Hungarian
(IoU cost, background matched like any id) when #ids = #GT classes, else majority vote by IoU (the
code; the paper says "most overlap"), the per-class IoU table and the "discovered categories"
counts of Table 3 (classes with IoU ≥ 20 % / > 0 and their mean).

GT is relabelled as COMUS sees it: the dataset's background classes -> 0, the others -> 1..C-1
(`dense_jax.eval.foreground.relabel`; identity on VOC), void 255 ignored.
"""

from __future__ import annotations

import numpy as np

from dense_jax.eval import metrics
from dense_jax.eval.foreground import relabel


def num_gt_classes(data) -> int:
    """C = 1 + the dataset's non-background classes (21 on VOC, 7 on the scenes)."""
    return 1 + data.num_classes - len(data.background)


def comus_gt(mask: np.ndarray, data) -> np.ndarray:
    """A GT mask with background -> 0, foreground classes -> 1..C-1, void -> 255."""
    return relabel(np.asarray(mask), tuple(data.background), data.ignore_index, data.num_classes)


def scores(cm: np.ndarray, match: str = "auto") -> dict:
    """mIoU and per-class IoU of a (C, K+1) confusion matrix: ``match="auto"`` is Hungarian when
    K + 1 = C and majority-by-IoU otherwise; ``"hungarian"`` / ``"majority"`` force one."""
    if match == "auto":
        match = "hungarian" if cm.shape[0] == cm.shape[1] else "majority"
    if match == "hungarian":
        mapping = metrics.hungarian_match(cm)
    elif match == "majority":
        mapping = metrics.majority_match(cm, score="iou")
    else:
        raise ValueError(f"unknown evaluation.match {match!r}; use auto, hungarian or majority")
    result = metrics.miou_from_confusion(cm, mapping)
    iou = result["per_class_iou"]
    found, present = iou >= 0.2, iou > 0
    return {
        "miou": result["miou"],
        "pixel_accuracy": result["pixel_accuracy"],
        "per_class_iou": iou,
        "matching": match,
        "mapping": mapping,
        "n_iou_ge_20": int(found.sum()),
        "miou_iou_ge_20": float(iou[found].mean()) if found.any() else 0.0,
        "n_iou_gt_0": int(present.sum()),
        "miou_iou_gt_0": float(iou[present].mean()) if present.any() else 0.0,
    }


def foreground_iou(salient: np.ndarray, gt: np.ndarray) -> float:
    """IoU of a bool saliency mask with the GT foreground (``gt`` relabelled: != 0), void pixels
    (255) left out; 1 when both are empty."""
    valid = gt != 255
    fg = (gt != 0) & valid
    inter = np.sum(salient & fg)
    union = np.sum((salient & valid) | fg)
    return float(inter / union) if union else 1.0


class Scorer:
    """Accumulates (prediction, GT) pairs of one split and scores them (`scores`). With
    ``min_labelled`` > 0, a pair whose GT has fewer foreground (labelled, non-void) pixels is left
    out and counted: the reference's COCO val filter (>= 1000 labelled pixels, comus.md §7)."""

    def __init__(self, data, num_pred: int, min_labelled: int = 0):
        self.data, self.min_labelled = data, min_labelled
        self.acc = metrics.ConfusionAccumulator(num_gt_classes(data), num_pred, ignore_index=255)
        self.n_scored = self.n_below_min_labelled = 0

    def add(self, pred: np.ndarray, gt_mask: np.ndarray) -> None:
        gt = comus_gt(gt_mask, self.data)
        if self.min_labelled and np.sum((gt != 0) & (gt != 255)) < self.min_labelled:
            self.n_below_min_labelled += 1
            return
        self.acc.update(pred, gt)
        self.n_scored += 1

    def result(self, match: str = "auto") -> dict:
        counts = {"n_images": self.n_scored, "n_below_min_labelled": self.n_below_min_labelled}
        return {**scores(self.acc.cm, match), **counts}
