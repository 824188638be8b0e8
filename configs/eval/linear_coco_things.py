"""Linear segmentation probe on COCO-Things (12 supercategories; evaluation.md §2a/§2b).

§2a trains on the fixed 10% subset of train2017 (``train10``, 11,828 images), evaluates on
val2017 (5,000) at 448². Reproduces NeCo Tab. 2 (COCO-Things): DINO 43.9, CrOC 64.3, CrIBo 64.3,
DINOv2R 75.3, NeCo 82.3. ``:croc`` (full train2017: add ``--config.data.train_split=train``,
10 epochs) reproduces CrOC Tab. 1: DINO (COCO) 47.1, CrOC (COCO) 55.6.

    python -m dense_jax.evaluate --config=configs/eval/linear_coco_things.py --workdir=DIR \\
        --config.weights=PATH --config.data.root=data/coco

Variants (``path:a,b`` applies a then b; configs/eval/linear_common.py): ``demo``, ``croc``
(CrOC's probe, 10 epochs), ``croc_demo`` (demo, then CrOC's probe at the demo's 20 epochs).
"""

from configs.eval import base, linear_common

VARIANTS = linear_common.variants(croc_epochs=10)


def get_config(arg=None):
    return base.make("linear", "coco_things", arg, VARIANTS)
