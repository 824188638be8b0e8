"""K-means with K = #classes on Pascal VOC 2012 val tokens (evaluation.md §3a).

Standardise + PCA-50 of the 448² val tokens, K = 21, seeds 0..4, ids nearest to 100×100,
Hungarian, mean over 21 classes and the 5 seeds. Reproduces NeCo Tab. 7 (VOC, K = GT):
DINO 4.3, CrOC 3.4, CrIBo 18.3, DINOv2R 12.2, NeCo 17.8; CrOC Tab. 3 uses
``--config.kmeans.resolution=pixels`` (DINO (COCO) 5.2, CrOC (COCO) 16.1).

    python -m dense_jax.evaluate --config=configs/eval/kmeans_voc.py --workdir=DIR \\
        --config.weights=PATH --config.data.root=data/VOCdevkit
    python -m dense_jax.evaluate --config=configs/eval/kmeans_voc.py:demo --workdir=/tmp/km

Variants (configs/eval/base.py): ``demo`` (built-in scenes, K = 9, tiny backbone, CPU).
"""

from configs.eval import base

VARIANTS = base.VARIANTS


def get_config(arg=None):
    return base.make("kmeans", "voc", arg, VARIANTS)
