"""Linear segmentation probe on COCO-Stuff-15 (15 stuff supercategories; evaluation.md §2a/§2b).

Reproduces NeCo Tab. 2 (COCO-Stuff): DINO 45.9, CrOC 51.2, CrIBo 49.1, DINOv2R 56.0, NeCo 62.0;
``:croc`` (with ``--config.data.train_split=train``) CrOC Tab. 1: DINO (COCO) 46.2, CrOC 49.7.

    python -m dense_jax.evaluate --config=configs/eval/linear_coco_stuff.py --workdir=DIR \\
        --config.weights=PATH --config.data.root=data/coco

Variants (``path:a,b`` applies a then b; configs/eval/linear_common.py): ``demo``, ``croc``
(CrOC's probe, 10 epochs), ``croc_demo`` (demo, then CrOC's probe at the demo's 20 epochs).
"""

from configs.eval import base, linear_common

VARIANTS = linear_common.variants(croc_epochs=10)


def get_config(arg=None):
    return base.make("linear", "coco_stuff", arg, VARIANTS)
