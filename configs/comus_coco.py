"""COMUS on COCO 2017 (comus.md; the seed's Tables 3 and 4): discovery with K = 80 on train2017,
one round of self-training, scored on val2017 over 81 classes (background + the 80 things) with
Hungarian matching, plus Table 3's "discovered categories" (classes with IoU >= 20 % and > 0 and
their mIoU: ``n_iou_ge_20`` / ``miou_iou_ge_20`` / ``n_iou_gt_0`` / ``miou_iou_gt_0`` of every
iteration in results.json).

Everything not listed here is configs/comus_voc.py (its docstring lists the paper/code
differences and our substitutions). COCO differs from VOC as in the code (comus.md §6, Table 11):
K = 80, one iteration of 1 epoch on the train2017 pseudo-masks, input 256, crop scale
(0.2, 1.0).

Seed tables (comus.md §9): Table 3 (COCO val, 81 classes): pseudo-masks 18.2 mIoU, 33 classes
with IoU >= 20 % (their mIoU 36.6), 73 with IoU > 0 (20.2); COMUS 19.6, 34 (40.7), 60 (26.5).
Table 4 (the 21 VOC classes on COCO): trained on VOC 31.9, on COCO 28.8 (not a config here).

Data differences (dense_jax/data/segmentation/coco.py ``COCO81``): the reference merges the
instance masks (first annotation wins on overlaps, crowd labelled) and keeps only val images with
>= 1000 labelled pixels; we read the same classes from the panoptic PNGs (or stuffthingmaps) and
apply the val filter when scoring the network (``evaluation.min_labelled_pixels=1000``; results.json
counts the images left out). The code's GT pre-filter of the train list is not applied.
Iteration 0 is scored on the discovery split (train2017), not transductively on val.

Commands::

  python -m dense_jax.main --config=configs/comus_coco.py --workdir=workdirs/comus_coco \\
      --config.data.root=data/coco        # weights: data/weights/dino_deitsmall8_pretrain.pth

Variants: those of configs/comus_voc.py (``overcluster30`` etc. apply unchanged).
"""

from __future__ import annotations

import ml_collections as mlc

from configs import common, comus_voc

VARIANTS = comus_voc.VARIANTS
COCO81 = dict(
    name="coco81", root="data/coco", train_split="train", num_classes=81, ignore_index=255, background=(0,)
)


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    c = comus_voc.get_config()
    c.data.update(dict(COCO81, val_split="val", limit_val=0))
    c.discovery.n_clusters = 80
    c.evaluation.min_labelled_pixels = 1000  # the code's val filter (comus.md §7)
    c.self_train.update(
        dict(input_size=256, crop_scale=(0.2, 1.0), epochs=(1,), splits=("train",), limits=(0,))
    )
    return common.apply_variants(c, arg, VARIANTS)
