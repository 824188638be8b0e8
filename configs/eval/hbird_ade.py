"""Dense NN retrieval (Hummingbird) on ADE20K (151 classes, GT 0 ignored; evaluation.md §1).

Same protocol as ``hbird_voc`` on ADE train subsets 1/128, 1/64, 1/8 (150 / 300 / 2550 images:
1, 2, 17 per class; 5 seeds) and the full 20,210 (q = 253 patches per image at S = 512, E = 2).
The subsets are hbird's own ADE file sets (open-hummingbird-eval ``file_sets/ade20k``), shipped
in the package and used by default when your ADE train copy holds all their ids; NeCo's
class-balanced draws with ``--config.hbird.file_sets=draw``, or any folder of file sets.
``<fraction>_reference`` averages over all 151 classes (class 0 always 0, i.e. Σ_{1..150}/151),
as NeCo Tab. 8 (ADE 1/128, 1/64, 1/8, 1/1): DINO S/16 9.5 / 11.0 / 15.0 / 17.9, CrIBo 14.6 /
17.3 / 22.7 / 26.6, DINOv2R 19.6 / 22.8 / 30.1 / 35.9, NeCo 23.7 / 27.2 / 34.0 / 39.8;
``<fraction>_corrected`` averages the 150 real classes present.

    python -m dense_jax.evaluate --config=configs/eval/hbird_ade.py --workdir=DIR \\
        --config.weights=PATH --config.data.root=data/ADEChallengeData2016

Variants (configs/eval/base.py): ``demo`` (built-in scenes, tiny backbone, CPU).
"""

from configs.eval import base

VARIANTS = base.VARIANTS


def get_config(arg=None):
    return base.make("hbird", "ade", arg, VARIANTS)
