"""CrIBo's Segmenter linear decoder on Pascal Context (evaluation.md §2c;
configs/eval/segmenter_common.py).

Last layer, 512² crops, 80k iterations, Adam, best of lr {8e-4, 3e-4, 1e-4, 8e-5}; the 59
classes of MMSeg's PascalContextDataset59 (background ignored; the reader's ``num_classes=60``
keeps it as a class). Targets CrIBo Table 2 (Pascal Context linear); ``:last4`` CrIBo Table 7.
The number of classes CrIBo's MMSeg config used is not in the paper: 59 is our reading of
evaluation.md §5 ("59 classes + background").

    python -m dense_jax.evaluate --config=configs/eval/segmenter_pcontext.py --workdir=workdirs/seg_pc \\
        --config.weights=cribo_vits16_coco.pth --config.data.root=data/VOCdevkit
"""

from configs.eval import segmenter_common

VARIANTS = segmenter_common.VARIANTS


def get_config(arg=None):
    return segmenter_common.make("pascal_context", arg, iterations=80_000, lr_sweep=(8e-4, 3e-4, 1e-4, 8e-5))
