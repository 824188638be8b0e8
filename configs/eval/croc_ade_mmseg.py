"""CrOC's ADE20K linear rows (CrOC Table 1, ADE20K column; evaluation.md §2b): MMSeg, 40k
iterations, batch 16, the best of lr {1e-3, 8e-4, 3e-4, 1e-4, 8e-5}, features of the last 4
blocks concatenated as in CrOC's other linear rows (n_b is unspecified there). Shared
MMSeg-style recipe and its deviations: configs/eval/segmenter_common.py.

    python -m dense_jax.evaluate --config=configs/eval/croc_ade_mmseg.py --workdir=workdirs/croc_ade \\
        --config.weights=croc_vits16_coco.pth --config.data.root=data/ADEChallengeData2016
    python -m dense_jax.evaluate --config=configs/eval/croc_ade_mmseg.py:demo --workdir=/tmp/croc_ade
"""

from configs.eval import segmenter_common

VARIANTS = segmenter_common.VARIANTS


def get_config(arg=None):
    return segmenter_common.make(
        "ade", arg, iterations=40_000, lr_sweep=(1e-3, 8e-4, 3e-4, 1e-4, 8e-5), n_blocks=4, variant="croc"
    )
