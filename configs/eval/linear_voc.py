"""Linear segmentation probe on Pascal VOC 2012 (evaluation.md §2a; §2b with ``:croc``).

Train on trainaug (10,582), evaluate the final head on val (1,449) at 448², identity mapping,
mean over the 21 classes. Reproduces NeCo Tab. 2 (VOC): DINO S/16 50.2, CrOC 67.4, CrIBo 71.6,
DINOv2R 74.2, NeCo 81.3; ``:croc`` reproduces CrOC Tab. 1 (VOC): DINO (COCO) 47.2,
CrOC (COCO) 54.5, CrOC (IN) 70.6.

    python -m dense_jax.evaluate --config=configs/eval/linear_voc.py --workdir=workdirs/lin_voc \\
        --config.weights=dino_deitsmall16_pretrain.pth --config.data.root=data/VOCdevkit
    python -m dense_jax.evaluate --config=configs/eval/linear_voc.py:croc ...   # CrOC protocol
    python -m dense_jax.evaluate --config=configs/eval/linear_voc.py:demo --workdir=/tmp/lin

Variants (``path:a,b`` applies a then b; configs/eval/linear_common.py): ``demo``, ``croc``
(CrOC's probe, 45 epochs), ``croc_demo`` (demo, then CrOC's probe at the demo's 20 epochs).
"""

from configs.eval import base, linear_common

VARIANTS = linear_common.variants(croc_epochs=45)


def get_config(arg=None):
    return base.make("linear", "voc", arg, VARIANTS)
