"""Segmentation and video metrics (evaluation.md §1, §3, §4, §6).

Units: every score is a fraction in [0, 1] (multiply by 100 for the papers' tables).

Conventions (evaluation.md §6):
- ``cm[g, p]`` counts the valid pixels (GT != ignore) with GT class ``g`` and predicted id ``p``;
  rows are GT classes (C_gt), columns predicted ids (C_pred, e.g. K clusters).
- A *mapping* is an int array of length C_pred sending predicted ids to GT classes; -1 means
  "no class" (those pixels only add false negatives).
- Folding: ``Cf[:, c] = sum_{p: mapping[p] = c} cm[:, p]``; TP_c = Cf[c, c], FP_c = colsum - TP,
  FN_c = rowsum - TP, IoU_c = TP / max(TP + FP + FN, 1e-8).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

_EPS = 1e-8  # the references' max(denominator, 1e-8)


# ----------------------------------------------------------------------------- confusion matrix
@functools.partial(jax.jit, static_argnames=("num_classes", "num_pred_classes", "ignore_index"))
def confusion_matrix(
    pred,
    target,
    num_classes: int,
    valid=None,
    ignore_index: int | None = 255,
    num_pred_classes: int | None = None,
):
    """(C_gt, C_pred) int32 pixel counts of one batch, in JAX; ignored pixels never count, and batches
    or shards summed in any order equal a single pass (§6, §8.4-5).

    ``pred`` and ``target`` are integer arrays of one shape, e.g. (B, H, W). ``valid`` masks whole
    padded samples (shape (B,)) or single pixels (same shape as ``target``). Pixels with
    GT == ``ignore_index``, with GT outside [0, C_gt) or a prediction outside [0, C_pred) are dropped
    (as hbird 2.0). Under jit on sharded inputs the scatter-add is a global sum.
    int32 counts: accumulate across batches with :class:`ConfusionAccumulator` (int64).
    """
    num_pred = num_classes if num_pred_classes is None else num_pred_classes
    pred = pred.astype(jnp.int32)
    target = target.astype(jnp.int32)
    keep = (target >= 0) & (target < num_classes) & (pred >= 0) & (pred < num_pred)
    if ignore_index is not None:
        keep &= target != ignore_index
    if valid is not None:
        valid = jnp.asarray(valid, bool)
        keep &= valid.reshape(valid.shape + (1,) * (target.ndim - valid.ndim))
    flat = jnp.where(keep, target * num_pred + pred, 0).ravel()
    counts = jnp.zeros(num_classes * num_pred, jnp.int32).at[flat].add(keep.ravel().astype(jnp.int32))
    return counts.reshape(num_classes, num_pred)


class ConfusionAccumulator:
    """Dataset-level int64 confusion matrix on the host (one matrix per split, §1/§6)."""

    def __init__(self, num_classes: int, num_pred_classes: int | None = None, ignore_index: int | None = 255):
        self.num_classes = num_classes
        self.num_pred_classes = num_classes if num_pred_classes is None else num_pred_classes
        self.ignore_index = ignore_index
        self.cm = np.zeros((self.num_classes, self.num_pred_classes), np.int64)

    def add(self, cm) -> None:
        """Adds a batch matrix, e.g. the output of :func:`confusion_matrix` (one host transfer)."""
        self.cm += np.asarray(jax.device_get(cm), np.int64)

    def update(self, pred, target, valid=None) -> None:
        """Counts host arrays with ``np.bincount``; same masking rules as :func:`confusion_matrix`."""
        pred = np.asarray(pred, np.int64)
        target = np.asarray(target, np.int64)
        keep = (target >= 0) & (target < self.num_classes) & (pred >= 0) & (pred < self.num_pred_classes)
        if self.ignore_index is not None:
            keep &= target != self.ignore_index
        if valid is not None:
            valid = np.asarray(valid, bool)
            keep &= valid.reshape(valid.shape + (1,) * (target.ndim - valid.ndim))
        idx = target[keep] * self.num_pred_classes + pred[keep]
        self.cm += np.bincount(idx, minlength=self.cm.size).reshape(self.cm.shape)

    def result(
        self, match: str = "identity", average: str = "all", exclude_classes: Sequence[int] = ()
    ) -> dict:
        """mIoU of the accumulated matrix; ``match`` in {identity, hungarian, majority}."""
        mapping = {"identity": identity_match, "hungarian": hungarian_match, "majority": majority_match}[
            match
        ](self.cm)
        return miou_from_confusion(self.cm, mapping, average=average, exclude_classes=exclude_classes)


# ----------------------------------------------------------------------------- matching
def _iou_matrix(cm: np.ndarray) -> np.ndarray:
    """IoU of every (GT class, predicted id) pair: TP / (row + col - TP) (hbird 2.0 score)."""
    cm = np.asarray(cm, np.float64)
    denom = cm.sum(1, keepdims=True) + cm.sum(0, keepdims=True) - cm
    return cm / np.maximum(denom, _EPS)


def identity_match(cm) -> np.ndarray:
    """Linear-probe mapping: id p is class p; ids >= C_gt belong to no class."""
    num_gt, num_pred = np.shape(cm)
    ids = np.arange(num_pred)
    return np.where(ids < num_gt, ids, -1)


def hungarian_match(cm, unmatched: int = 0) -> np.ndarray:
    """One-to-one matching maximising total IoU, background matched like any id (§1, §3a, comus.md §7).

    As hbird/Leopart: ``scipy.optimize.linear_sum_assignment(1 - IoU)`` on the (C_gt, C_pred) IoU
    matrix (IoU, not raw counts). When C_pred > C_gt the leftover ids go to ``unmatched``: 0
    (background, the references) or -1 (counted as wrong everywhere).
    """
    rows, cols = linear_sum_assignment(1.0 - _iou_matrix(cm))
    mapping = np.full(np.shape(cm)[1], unmatched, np.int64)
    mapping[cols] = rows
    return mapping


def majority_match(cm, score: str = "precision") -> np.ndarray:
    """Many-to-one matching for overclustering (§3a, §3b, comus.md §7).

    Each predicted id goes to its best GT class independently. ``score="precision"``:
    |cluster ∩ c| / |cluster|, i.e. majority voting (Leopart/NeCo ``precision_based``; COMUS paper
    "largest overlap"); ``score="iou"``: highest IoU (COMUS code). Ties and empty clusters go to the
    lowest class id, as the references' strict ``>`` scan.
    """
    cm = np.asarray(cm, np.float64)
    if score == "precision":
        s = cm / np.maximum(cm.sum(0, keepdims=True), _EPS)
    elif score == "iou":
        s = _iou_matrix(cm)
    else:
        raise ValueError(f"unknown score {score!r}")
    return np.argmax(s, axis=0).astype(np.int64)


def remap(pred, mapping):
    """Applies a mapping to predicted ids (numpy or JAX arrays): ``mapping[pred]``."""
    if isinstance(pred, jax.Array):
        return jnp.asarray(mapping)[pred]
    return np.asarray(mapping)[np.asarray(pred)]


def fold_confusion(cm, mapping) -> np.ndarray:
    """(C_gt, C_gt) matrix after merging the predicted columns by ``mapping`` (§6)."""
    cm = np.asarray(cm, np.int64)
    mapping = np.asarray(mapping)
    num_gt = cm.shape[0]
    keep = mapping >= 0
    folded = np.zeros((num_gt, num_gt), np.int64)
    np.add.at(folded.T, mapping[keep], cm[:, keep].T)
    return folded


# ----------------------------------------------------------------------------- mIoU
def miou_from_confusion(cm, mapping=None, average: str = "all", exclude_classes: Sequence[int] = ()) -> dict:
    """mIoU, per-class IoU and pixel accuracy of a confusion matrix (§6, §9).

    ``mapping`` defaults to :func:`identity_match`. ``average``:
    - ``"all"`` (reference, hbird/Leopart): mean over all C_gt classes, a class absent from GT and
      prediction counts as 0. With ADE (C=151, GT 0 ignored) this is sum_{c=1..150} IoU_c / 151.
    - ``"present"`` (corrected, §9 clean mode): mean over classes with TP + FP + FN > 0.
    ``exclude_classes`` drops classes from the mean in either mode; the ADE correction is
    ``average="present", exclude_classes=(0,)``. Excluded/absent classes get NaN in
    ``per_class_iou`` only under ``"present"``.
    """
    cm = np.asarray(cm, np.int64)
    folded = fold_confusion(cm, identity_match(cm) if mapping is None else mapping)
    tp = np.diag(folded).astype(np.float64)
    fp = folded.sum(0) - tp
    fn = cm.sum(1) - tp  # row sums of the raw matrix: pixels sent to no class are FN too
    union = tp + fp + fn
    iou = tp / np.maximum(union, _EPS)
    use = np.ones_like(iou, bool)
    use[list(exclude_classes)] = False
    if average == "present":
        use &= union > 0
        iou = np.where(use, iou, np.nan)
    elif average != "all":
        raise ValueError(f"unknown average {average!r}")
    total = cm.sum()
    return dict(
        miou=float(iou[use].mean()) if use.any() else float("nan"),
        per_class_iou=iou,
        pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
    )


# ----------------------------------------------------------------------------- DAVIS J and F
def region_similarity(gt, pred, void=None) -> np.ndarray:
    """DAVIS J: IoU of binary masks over the last two axes, void pixels excluded, 1 if the union
    is empty (davis2017-evaluation ``db_eval_iou``, §4). Shapes (..., H, W) -> (...)."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    keep = np.ones_like(gt) if void is None else ~np.asarray(void, bool)
    inter = np.sum(gt & pred & keep, axis=(-2, -1))
    union = np.sum((gt | pred) & keep, axis=(-2, -1))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def _seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of a binary mask (davis2017-evaluation ``_seg2bmap``, same size)."""
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    """skimage.morphology.disk: x^2 + y^2 <= r^2 on a (2r+1)^2 grid."""
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


def boundary_radius(shape, bound_th: float = 0.008) -> int:
    """Dilation radius in pixels: ceil(bound_th * image diagonal), or bound_th itself if >= 1
    (854x480 -> 8, case H of §6)."""
    return int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(*shape[-2:])))


def _f_measure_2d(gt, pred, void, bound_th) -> float:
    keep = ~void
    fg_b = _seg2bmap(pred & keep)
    gt_b = _seg2bmap(gt & keep)
    disk = _disk(boundary_radius(gt.shape, bound_th))
    fg_dil = ndimage.binary_dilation(fg_b, structure=disk)
    gt_dil = ndimage.binary_dilation(gt_b, structure=disk)
    n_fg, n_gt = fg_b.sum(), gt_b.sum()
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0
    precision = (fg_b & gt_dil).sum() / n_fg
    recall = (gt_b & fg_dil).sum() / n_gt
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def boundary_f_measure(gt, pred, void=None, bound_th: float = 0.008) -> np.ndarray:
    """DAVIS F: boundary F-measure as davis2017-evaluation ``f_measure`` (§4).

    Boundaries by ``seg2bmap`` of the void-masked masks, tolerance = disk dilation of radius
    :func:`boundary_radius`; precision = predicted boundary pixels within tolerance of the GT
    boundary / predicted boundary pixels, recall symmetric, F = 2PR/(P+R). Both boundaries empty
    -> 1, one empty -> 0. Shapes (..., H, W) -> (...).
    """
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    void = np.zeros_like(gt) if void is None else np.broadcast_to(np.asarray(void, bool), gt.shape)
    lead = gt.shape[:-2]
    out = [
        _f_measure_2d(g, p, v, bound_th)
        for g, p, v in zip(
            gt.reshape((-1,) + gt.shape[-2:]),
            pred.reshape((-1,) + gt.shape[-2:]),
            void.reshape((-1,) + gt.shape[-2:]),
        )
    ]
    return np.asarray(out, np.float64).reshape(lead)
