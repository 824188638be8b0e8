"""Dense NN retrieval (Hummingbird) on Pascal VOC 2012 (evaluation.md §1).

Memory from trainaug subsets 1/128, 1/64, 1/8 (5 seeds; hbird's own file sets, shipped in the
package and used by default on a complete copy of trainaug, or NeCo's class-balanced rule with
``--config.hbird.file_sets=draw``, or any folder of file sets) and the full set; M = 10,240,000
patches, E = 2, S = 512 (P = 16; use 504 for P = 14), k = 30,
T = 0.02, exact k-NN. ``<fraction>_reference`` is hbird's Hungarian number (NeCo Tab. 8, VOC
1/128, 1/64, 1/8, 1/1): DINO S/16 26.4 / 30.5 / 41.3 / 47.9, CrOC 34.0 / 41.8 / 53.8 / 59.5,
CrIBo 53.9 / 59.9 / 66.9 / 71.2, DINOv2R S/14 53.0 / 57.9 / 68.2 / 73.8, NeCo S/14 66.5 / 70.3 /
76.3 / 78.9; ``<fraction>_corrected`` is the identity-mapped mean over present classes. For
strict parity with hbird's normalisation add ``--config.input.std="(0.229,0.224,0.255)"``.

    python -m dense_jax.evaluate --config=configs/eval/hbird_voc.py --workdir=DIR \\
        --config.weights=PATH --config.data.root=data/VOCdevkit
    python -m dense_jax.evaluate --config=configs/eval/hbird_voc.py:demo --workdir=/tmp/hb

Variants (configs/eval/base.py): ``demo`` (built-in scenes, tiny backbone, CPU).
"""

from configs.eval import base

VARIANTS = base.VARIANTS


def get_config(arg=None):
    return base.make("hbird", "voc", arg, VARIANTS)
