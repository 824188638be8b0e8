"""CrIBo's cross-image object matches on a few images (the CrIBo paper's Fig. 4; cribo.md §4, §5).

Two training-style views of the first ``cribo_matches.n_images`` val images, clustered by the
frozen backbone's final-LN tokens with the COCO settings (K = 64, λ_pos = 2), each image's
largest object matched to the nearest object of the other images, drawn into
``cribo_matches.png`` (dense_jax/eval/cribo_matches.py).

    python -m dense_jax.evaluate --config=configs/eval/cribo_matches.py --workdir=DIR \\
        --config.weights=workdirs/cribo_coco --config.data.root=data/VOCdevkit
    python -m dense_jax.evaluate --config=configs/eval/cribo_matches.py:demo --workdir=/tmp/m \\
        --config.weights=workdirs/cribo_demo

Variants: ``demo`` (built-in scenes, vit_demo16, 96² views and K = 8 as the CrIBo demo).
"""

from configs.eval import base


def _demo(c):
    """configs/eval/base.py's demo with the CrIBo demo's 96² views and K = 8."""
    base.demo(c)
    c.cribo_matches.view_size = 96
    c.cribo_matches.clustering.k = 8


VARIANTS = {"demo": _demo}


def get_config(arg=None):
    return base.make("cribo_matches", "voc", arg, VARIANTS)
