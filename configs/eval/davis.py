"""DAVIS-2017 val semi-supervised video object segmentation by label propagation (evaluation.md §4).

DINO's protocol: 480p frames squashed to 480 × ⌊·/64⌋·64, context = first frame + 7 previous
frames, neighbourhood 12, top-5, temperature 0.1; J&F over the 61 objects. Reproduces
(J&F / J / F): DINO S/16 (COCO) 57.1 / 55.3 / 58.9, CrOC (COCO) 57.4 / 55.7 / 59.1, CrOC (COCO+)
58.4 / 56.5 / 60.2; DINO paper S/16 IN 61.8 / 60.2 / 63.4. Strict parity with DINO's
normalisation: ``--config.input.std="(0.228,0.224,0.225)"``. Indexed PNGs for the official
toolkit are written to ``<workdir>/davis/<sequence>/<frame>.png``.

    python -m dense_jax.evaluate --config=configs/eval/davis.py --workdir=DIR \\
        --config.weights=PATH --config.data.root=data/DAVIS
    python -m dense_jax.evaluate --config=configs/eval/davis.py:demo --workdir=/tmp/davis

Variants (configs/eval/base.py): ``demo`` (3 synthetic panning videos over scenes, CPU).
"""

from configs import common
from configs.eval import base


def _demo(c):
    """base.demo with 3 synthetic panning videos over scenes; batch 16 as the full protocol."""
    base.demo(c)
    c.input.batch_size = 16
    c.data.limit_val = 3


VARIANTS = {"demo": _demo}


def get_config(arg=None):
    c = base.make("davis", "davis")
    c.input.batch_size = 16
    return common.apply_variants(c, arg, VARIANTS)
