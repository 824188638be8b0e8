"""Cluster-based foreground extraction (CBFE) on Pascal VOC 2012 (evaluation.md §3c).

Attention foreground (τ = 0.65 as the code; ``--config.cbfe.tau=0.7`` for the NeCo text),
spherical K-means K_fg = 200 on train (1464) + val tokens, precision threshold chosen on train
with GT, foreground-only K-means with K = 20 (seeds 0..4), Hungarian 21×21 on val. NeCo Tab. 1b:
DINOv2R + NeCo + CBFE 41.3 (the +CD 55.1 step, community detection, is not implemented).
Note the protocol uses train GT to pick the threshold and is transductive on val.

    python -m dense_jax.evaluate --config=configs/eval/cbfe_voc.py --workdir=DIR \\
        --config.weights=PATH --config.data.root=data/VOCdevkit
    python -m dense_jax.evaluate --config=configs/eval/cbfe_voc.py:demo --workdir=/tmp/cbfe

Variants (configs/eval/base.py): ``demo`` (built-in scenes, tiny backbone, CPU).
"""

from configs import common
from configs.eval import base

VARIANTS = base.VARIANTS


def get_config(arg=None):
    c = base.make("cbfe", "voc")
    c.data.train_split = "train"  # VOC train (1464) with SegmentationClassAug masks
    return common.apply_variants(c, arg, VARIANTS)
