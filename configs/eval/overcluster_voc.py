"""Overclustering (K = 100, 300, 500) of Pascal VOC 2012 val tokens (evaluation.md §3a).

Same pipeline as ``kmeans_voc`` with the greedy many-to-one assignment by precision (majority
vote) instead of Hungarian. Reproduces NeCo Tab. 7 (VOC K = 300 / 500): DINO 13.9 / 17.3,
CrOC 16.4 / 20.0, CrIBo 51.3 / 54.5, DINOv2R 46.7 / 49.5, NeCo 69.4 / 72.6 (K = 100 is the
figures' setting). COMUS's overclustering (§3b, 30/50 clusters, IoU-based assignment):
``--config.kmeans.ks="(30,50)" --config.kmeans.many_to_one=iou``.

    python -m dense_jax.evaluate --config=configs/eval/overcluster_voc.py --workdir=DIR \\
        --config.weights=PATH --config.data.root=data/VOCdevkit

Variants (configs/eval/base.py): ``demo`` (built-in scenes, K = 27, 45, CPU).
"""

from configs import common
from configs.eval import base


def _demo(c):
    """base.demo, overclustering the 9 scene classes with K = 27, 45."""
    base.demo(c)
    c.kmeans.ks = (27, 45)


VARIANTS = {"demo": _demo}


def get_config(arg=None):
    c = base.make("kmeans", "voc")
    c.kmeans.ks = (100, 300, 500)
    return common.apply_variants(c, arg, VARIANTS)
