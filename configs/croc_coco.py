"""CrOC ViT-S/16 pre-trained on COCO train2017 (croc.md; CVPR'23).

Settings: the paper column of croc.md §1, which produced the published numbers. DINO's recipe
(`configs/dino_coco.py`, "CrOC uses the same setting": ViT-S/16, drop path 0.1, head 65536 with
norm_last_layer False, teacher temperature 0.04 → 0.07 over 30 epochs, EMA 0.996 → 1, lr 5e-4
per 256 images, min_lr 1e-5, 10 warm-up epochs, weight decay 0.04 → 0.4, no gradient
clipping, last layers frozen for 1 epoch, batch 256, 300 epochs) with two 224² global views,
scale (0.25, 1), no local crops, bicubic, flip .5, jitter p .8, grayscale .2, blur p 1 on
view 1 and .1 on view 2, solarize .2 on view 2 (croc.md §2), plus the CrOC section: dense head
8192, α = 1, dense student temperature 0.1, clustering on the last block's values (``v``),
λ_pos = 4, K_start = 12, K_max = 12, Sinkhorn λ = 20 with 5 iterations, marginal
temperatures 2. The patch positions come from the crop boxes (``crops.patch_size``).

Where the released parser defaults differ from the paper, the paper is followed: K_start
(``n_tokens``) 12 instead of 5, K_max (``n_centroids_max``) 12 instead of 4 (the paper does
not state it; its text implies all K from K_start down to 2), ``which_features`` v instead of
k (COCO, COCO+), λ_pos 4, min_lr 1e-5 instead of 1e-6, clip 0 instead of 3,
norm_last_layer False instead of True, teacher temperature 0.04 → 0.07 / 30 epochs instead of
0.04 constant. ``croc.norm_group = 128`` is the reference's per-GPU batch (256 on 2 GPUs;
ImageNet 1024 on 8 dies), the group of images within which the clustering costs are min–max
normalised, the CLS norm is taken and the dense loss is averaged (methods/croc.py).
Mixed precision as in `configs/dino_coco.py`: fp32 by default, ``--config.model.dtype=bfloat16``.

Reproduces (teacher backbone, evaluation.md "seed numbers"): CrOC Table 1, linear mIoU
(protocol 2b) VOC / COCO-Things / COCO-Stuff: CrOC (COCO) 54.5 / 55.6 / 49.7, (COCO+)
60.6 / 62.7 / 51.7, (IN) 70.6 / 66.1 / 52.6, and the ADE20K MMSeg-style linear decoder
(`configs/eval/croc_ade_mmseg.py`): (COCO) 23.2, (IN) 28.4; Table 3, K-means K = GT
(``kmeans.resolution=pixels``): (COCO) 16.1 / 17.2 / 20.0, (COCO+) 20.6 / 17.1 / 21.9;
DAVIS-17 J&F (COCO) 57.4, (COCO+) 58.4. The released checkpoints score higher on COCO and
COCO+ (CrOC README: 54.9 / 55.7 / 49.9 and 61.6 / 64.4 / 52.2; the paper's runs had not
finished 300 epochs). Not recorded: Table 2 (its text is in none of the stored sources
searched, docs/reproduce.md) and the ablations of Table A1 (run with
``--config.croc.<field>=...``; the paper's ablations use λ_pos = 3). The clusters as in the paper's Fig. A1:
`configs/eval/croc_clusters.py`.

Commands (from the repository root)::

  # COCO train2017 images in data/coco/train2017/*.jpg
  python -m dense_jax.main --config=configs/croc_coco.py --workdir=workdirs/croc_coco
  # COCO+ (train2017 + unlabeled2017)
  python -m dense_jax.main --config=configs/croc_coco.py:coco_plus --workdir=workdirs/croc_cocoplus
  # ImageNet-1k train in data/imagenet/train/<wnid>/*.JPEG
  python -m dense_jax.main --config=configs/croc_coco.py:imagenet --workdir=workdirs/croc_in1k
  # CPU demo on the built-in scenes (DINO demo's model, crops and steps); writes the cluster
  # PNGs of the built-in scenes to workdirs/croc_demo/eval/clusters/step_*/ at the end
  python -m dense_jax.main --config=configs/croc_coco.py:demo --workdir=workdirs/croc_demo
  # seconds, used by the tests
  python -m dense_jax.main --config=configs/croc_coco.py:smoke --workdir=/tmp/croc_smoke
  # clusters of a trained run on a few images (Fig. A1)
  python -m dense_jax.evaluate --config=configs/eval/croc_clusters.py:demo \\
      --config.weights=workdirs/croc_demo --workdir=/tmp/croc_clusters

Variants (``path:a,b`` applies a then b; see `common.apply_variants`):

  coco       the default: COCO train2017
  coco_plus  COCO train2017 + unlabeled2017
  imagenet   ImageNet-1k train, batch 1024, clustering on keys, λ_pos = 3
  demo       built-in scenes, vit_demo16, 96² views, batch 32, 8 epochs (CPU, minutes)
  smoke      demo, then a 2-block ViT on 48² scenes with 32² views, 2 epochs (tests, seconds)
"""

from __future__ import annotations

import ml_collections as mlc

from configs import common, dino_coco


def croc_section() -> mlc.ConfigDict:
    """CrOC's loss and clustering settings (croc.md §1, paper column; methods/croc.py)."""
    return mlc.ConfigDict(
        dict(
            out_dim=8192,  # dense last layer (reference out_dim_c)
            alpha=1.0,  # weight of the dense loss
            student_temp=0.1,  # dense student temperature (the teacher's follows config.dino)
            center_momentum=0.9,  # dense centre
            features="v",  # clustering features of the last block: "q", "k" or "v"
            k_start=12,  # K_start (reference n_tokens; parser default 5)
            k_max=12,  # largest K kept (reference n_centroids_max; parser default 4)
            lam_pos=4.0,  # positional cost weight (reference pos_alpha)
            norm_group=128,  # images per normalisation group: the reference's per-GPU batch
            sinkhorn_lambda=20.0,
            sinkhorn_iters=5,
            temp_r=2.0,  # token marginal temperature (reference marginals_temp_r)
            temp_c=2.0,  # centroid marginal temperature (reference marginals_temp_c)
            uniform_marginals=False,
        )
    )


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    """The COCO run, edited by the comma-separated `VARIANTS` named in ``arg``."""
    c = dino_coco.get_config()
    c.method = "croc"
    c.crops.patch_size = 16  # emit global_pos: patch centres in original pixels (croc.md §2)
    c.croc = croc_section()
    return common.apply_variants(c, arg, VARIANTS)


def _coco(c: mlc.ConfigDict) -> None:
    """COCO train2017 (the default)."""
    c.data.folders = ("train2017",)


def _coco_plus(c: mlc.ConfigDict) -> None:
    """COCO+ = train2017 + unlabeled2017 (Table 1's COCO+ rows)."""
    c.data.folders = ("train2017", "unlabeled2017")


def _imagenet(c: mlc.ConfigDict) -> None:
    """ImageNet-1k train: batch 1024 (8 dies × 128), keys, λ_pos = 3 (croc.md §1)."""
    c.data.update(dict(name="imagenet", root="data/imagenet", folders=("train",), batch_size=1024))
    c.croc.update(dict(features="k", lam_pos=3.0))


def _demo(c: mlc.ConfigDict) -> None:
    """The DINO demo (`configs/dino_coco.py:demo`: model, data, recipe, schedule) with CrOC's
    loss and two views only (no local crops, as the paper): 6×6 tokens per view, a dense head
    of 512, one normalisation group per batch; the clusters of a few scenes are drawn at the end."""
    dino_coco.VARIANTS["demo"](c)
    c.crops.n_local = 0
    c.croc.update(dict(out_dim=512, norm_group=32))
    c.evals.clusters = dict(config="configs/eval/croc_clusters.py:demo", every=0)


def _smoke(c: mlc.ConfigDict) -> None:
    """The demo in seconds: 2×2 tokens per view (2N = 8), K_start = K_max = 4, groups of 4."""
    _demo(c)
    common.two_view_smoke(c)
    c.croc.update(dict(out_dim=32, k_start=4, k_max=4, norm_group=4))


VARIANTS = {
    "coco": _coco,
    "coco_plus": _coco_plus,
    "imagenet": _imagenet,
    "demo": _demo,
    "smoke": _smoke,
}
