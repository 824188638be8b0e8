"""CrIBo's Segmenter linear decoder on COCO-Stuff-164k (evaluation.md §2c;
configs/eval/segmenter_common.py).

Last layer, 512² crops, 160k iterations, Adam, best of lr {8e-4, 3e-4, 1e-4, 8e-5}; the 171 fine
classes (80 things + 91 stuff, MMSeg's COCOStuffDataset order) from the stuffthingmaps, trained on
train2017 and scored on val2017. Targets CrIBo Table 2 (COCO-Stuff-164k linear); ``:last4``
CrIBo Table 7.

    python -m dense_jax.evaluate --config=configs/eval/segmenter_coco_stuff164k.py \\
        --workdir=workdirs/seg_cs164k --config.weights=cribo_vits16_coco.pth --config.data.root=data/coco
"""

from configs.eval import segmenter_common

VARIANTS = segmenter_common.VARIANTS


def get_config(arg=None):
    return segmenter_common.make("coco_stuff164k", arg, iterations=160_000, lr_sweep=(8e-4, 3e-4, 1e-4, 8e-5))
