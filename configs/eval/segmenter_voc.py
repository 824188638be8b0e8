"""CrIBo's Segmenter linear decoder on Pascal VOC trainaug (evaluation.md §2c;
configs/eval/segmenter_common.py).

Last layer, 512² crops, 80k iterations, Adam, best of lr {8e-4, 3e-4, 1e-4, 8e-5}; val at 512².
Targets CrIBo Table 2 (VOC linear); ``:last4`` CrIBo Table 7.

    python -m dense_jax.evaluate --config=configs/eval/segmenter_voc.py --workdir=workdirs/seg_voc \\
        --config.weights=cribo_vits16_coco.pth --config.data.root=data/VOCdevkit
    python -m dense_jax.evaluate --config=configs/eval/segmenter_voc.py:demo --workdir=/tmp/seg
"""

from configs.eval import segmenter_common

VARIANTS = segmenter_common.VARIANTS


def get_config(arg=None):
    return segmenter_common.make("voc", arg, iterations=80_000, lr_sweep=(8e-4, 3e-4, 1e-4, 8e-5))
