"""Linear segmentation probe on ADE20K (151 classes, GT 0 ignored; evaluation.md §2a).

``miou`` keeps the reference's mean over 151 classes (class 0 always 0, i.e. the 150/151
effect); ``miou_corrected`` averages the 150 real classes. Reproduces NeCo Tab. 2 (ADE):
DINO 17.5, CrOC 23.1, CrIBo 22.7, DINOv2R 35.0, NeCo 40.1. (CrOC's ADE number is MMSeg,
§2b, not this protocol.)

    python -m dense_jax.evaluate --config=configs/eval/linear_ade.py --workdir=DIR \\
        --config.weights=PATH --config.data.root=data/ADEChallengeData2016

Variants (``path:a,b`` applies a then b; configs/eval/linear_common.py): ``demo``, ``croc``
(CrOC's probe, 45 epochs), ``croc_demo`` (demo, then CrOC's probe at the demo's 20 epochs).
"""

from configs.eval import base, linear_common

VARIANTS = linear_common.variants(croc_epochs=45)


def get_config(arg=None):
    return base.make("linear", "ade", arg, VARIANTS)
