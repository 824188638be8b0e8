"""CrOC's joint-view clusters per head on a few images (the CrOC paper's Fig. A1; croc.md §4).

Two training-style views of the first ``croc_clusters.n_images`` val images, clustered by the
frozen backbone's last-block values with the paper's settings (K_start = K_max = 12,
λ_pos = 4; ``--config.croc_clusters.clustering.features=k`` and ``.lam_pos=3`` for the
ImageNet model), drawn per head into ``croc_clusters.png`` (dense_jax/eval/croc_clusters.py).

    python -m dense_jax.evaluate --config=configs/eval/croc_clusters.py --workdir=DIR \\
        --config.weights=workdirs/croc_coco --config.data.root=data/VOCdevkit
    python -m dense_jax.evaluate --config=configs/eval/croc_clusters.py:demo --workdir=/tmp/cl \\
        --config.weights=workdirs/croc_demo

Variants: ``demo`` (built-in scenes, vit_demo16, 96² views as the CrOC demo trains on).
"""

from configs.eval import base


def _demo(c):
    """configs/eval/base.py's demo with the CrOC demo's 96² views."""
    base.demo(c)
    c.croc_clusters.view_size = 96


VARIANTS = {"demo": _demo}


def get_config(arg=None):
    return base.make("croc_clusters", "voc", arg, VARIANTS)
