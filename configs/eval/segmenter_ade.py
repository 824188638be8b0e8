"""CrIBo's Segmenter linear decoder on ADE20K (evaluation.md §2c; configs/eval/segmenter_common.py).

Last layer, 512² crops, 160k iterations, Adam, best of lr {8e-4, 3e-4, 1e-4, 8e-5}; 151 classes
with 0 ignored (``miou_corrected`` averages the 150 real ones). Targets CrIBo Table 2 (ADE20K
linear); ``:last4`` CrIBo Table 7.

    python -m dense_jax.evaluate --config=configs/eval/segmenter_ade.py --workdir=workdirs/seg_ade \\
        --config.weights=cribo_vits16_coco.pth --config.data.root=data/ADEChallengeData2016
    python -m dense_jax.evaluate --config=configs/eval/segmenter_ade.py:demo --workdir=/tmp/seg
"""

from configs.eval import segmenter_common

VARIANTS = segmenter_common.VARIANTS


def get_config(arg=None):
    return segmenter_common.make("ade", arg, iterations=160_000, lr_sweep=(8e-4, 3e-4, 1e-4, 8e-5))
