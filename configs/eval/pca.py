"""PCA colours of the patch tokens of any backbone, and patches ranked by similarity to a query
(dense_jax/eval/pca.py): ``pca.png``, ``sorted_neighbours.png`` and two scores, on the first
``pca.n_images`` VOC val images at 448².

    python -m dense_jax.evaluate --config=configs/eval/pca.py --workdir=DIR \\
        --config.weights=data/weights/dinov2_vits14_reg4_pretrain.pth --config.model.variant=auto \\
        --config.data.root=data/VOCdevkit
    python -m dense_jax.evaluate --config=configs/eval/pca.py:demo --workdir=/tmp/pca \\
        --config.weights=workdirs/dino_demo

Variants (configs/eval/base.py): ``demo`` (built-in scenes, tiny backbone, CPU).
"""

from configs.eval import base

VARIANTS = base.VARIANTS


def get_config(arg=None):
    return base.make("pca", "voc", arg, VARIANTS)
