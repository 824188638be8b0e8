"""Cluster-based foreground extraction (CBFE) on Pascal VOC 2012 (evaluation.md §3c).

Attention foreground (τ = 0.65 as the code; ``--config.cbfe.tau=0.7`` for the NeCo text),
spherical K-means K_fg = 200 on train (1464) + val tokens, precision threshold chosen on train
with GT, foreground-only K-means with K = 20 (seeds 0..4), Hungarian 21×21 on val. Then community
detection (``cd_miou``): fg-only K-means with K_cd = 189, co-occurrence graph (wt 0.07), Infomap
(markov time 1.2) with 10 seeds, mean ± std and best (NeCo's published settings; needs
``pip install 'dense_jax[cbfe]'``, or ``--config.cbfe.community.enabled=False``). NeCo Tab. 1b:
DINOv2R + NeCo + CBFE 41.3 → +CD 55.1 (its text says best of 10 seeds; the code prints the mean).
Note the protocol uses train GT to pick the threshold (and the CD settings were tuned with train
GT) and is transductive on val.

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
    c.cbfe.community.enabled = True
    return common.apply_variants(c, arg, VARIANTS)
