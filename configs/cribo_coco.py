"""CrIBo ViT-S/16 pre-trained on COCO train2017 (cribo.md; ICLR'24).

Settings: the released ``vits16-coco_args.json`` (cribo.md §1), which matches the paper:
DINO's recipe (`configs/dino_coco.py`: ViT-S/16, drop path 0.1, head 65536 with
norm_last_layer False, teacher temperature 0.04 → 0.07 over 30 epochs, EMA 0.996 → 1, lr 5e-4
per 256 images, min_lr 1e-5, 10 warm-up epochs, weight decay 0.04 → 0.4, no clipping, last
layers frozen for 1 epoch, batch 256, 300 epochs) with CrOC's two 224² views (scale
(0.25, 1), no local crops, blur 1 / .1, solarize on view 2, patch positions from the crop
boxes, cribo.md §2), plus the CrIBo section: object head 65536, K = 64 objects per image,
λ_pos = 2 (``pos_alpha`` = [a0, a1], constant), 5 outer clustering iterations, Sinkhorn λ = 20
with 5 iterations, a bank of S = 25,000 images, cosine matching.

Paper vs code (cribo.md [P≠C]); the code is followed by default: the cross-image loss divides
both views' sums by Z1 and is skipped when Z1 = 0 or in epoch 0 (paper eq. 8: Z2 for view 2,
no gating; ``--config.cribo.cross_image_norm=per_view --config.cribo.cross_image_start_epoch=0``);
the losses carry a ½ (paper eq. 6, 10 do not); the clustering uses hard assignments in the loop,
size-proportional marginals after the first solve and a min-distance positional cost (paper:
soft pooling, uniform marginals); the bootstrap ratio counts view 1 only.

The reference's per-GPU batch (32 images on 8 GPUs) is ``cribo.group``: the clustering costs
are min–max normalised, the cycle back-search runs and the object losses are pooled within it,
so the results do not depend on the mesh (methods/cribo.py). The released code cannot train on
COCO (its parser only accepts ImageNet); here COCO is an ordinary folder dataset. Initial bank:
``reference`` (uniform random, counted valid) or ``--config.cribo.bank_init=empty``. Mixed
precision as `configs/dino_coco.py` (fp32 default, ``--config.model.dtype=bfloat16``); the
bank's size per device is benchmarks/cribo_memory.md (about 0.6 GiB on 8 devices).

Reproduces (teacher backbone, evaluation.md "seed numbers"): CrIBo Table 1, dense
nearest-neighbour retrieval (Hummingbird, CrIBo's variant k = 50, `configs/eval/hbird_voc.py`,
`hbird_ade.py`), CrIBo (COCO) row 10.9 12.8 18.4 23.4 | 39.1 44.0 52.8 58.1 (DINO (COCO) 6.1 6.9
9.7 13.0 | 16.2 18.4 25.5 31.9 with `configs/dino_coco.py`). Table 2 (MMSeg Segmenter linear
decoder) has ImageNet rows only (`configs/cribo_in1k.py`); Table 4's numbers are not in
evaluation.md yet.

Commands (from the repository root)::

  # COCO train2017 images in data/coco/train2017/*.jpg
  python -m dense_jax.main --config=configs/cribo_coco.py --workdir=workdirs/cribo_coco
  # CPU demo on the built-in scenes (from scratch, like the CrOC demo; minutes)
  python -m dense_jax.main --config=configs/cribo_coco.py:demo --workdir=workdirs/cribo_demo
  # seconds, used by the tests
  python -m dense_jax.main --config=configs/cribo_coco.py:smoke --workdir=/tmp/cribo_smoke

Variants (``path:a,b`` applies a then b; see `common.apply_variants`):

  demo   built-in scenes, vit_demo16, 96² views, batch 32, K = 8, a bank of 512 images,
         8 epochs, linear / K-means / Hummingbird scores before and after, and the object
         matches of 8 scenes (Fig. 4) at the end: workdirs/cribo_demo/eval/matches/step_*/
  smoke  demo, then a 2-block ViT on 48² scenes with 32² views, K = 3, 2 epochs (tests)
"""

from __future__ import annotations

import ml_collections as mlc

from configs import common, dino_coco


def cribo_section() -> mlc.ConfigDict:
    """CrIBo's clustering, bank and loss settings (cribo.md §1 vits16-coco; methods/cribo.py)."""
    return mlc.ConfigDict(
        dict(
            out_dim=65536,  # object last layer (reference out_dim_c)
            student_temp=0.1,  # object student temperature (the teacher's follows config.dino)
            center_momentum=0.9,  # object centre
            k=64,  # objects per image (reference n_tokens)
            pos_alpha=(2.0, 2.0),  # [a0, a1]: α_pos(e) = linspace(a1, a0, epochs)[e]
            n_iter=5,  # outer clustering iterations
            sinkhorn_lambda=20.0,
            sinkhorn_iters=5,
            queue_size=25000,  # S, images in the bank
            group=32,  # the reference's per-GPU batch (normalisation, back-search, pooling)
            bank_init="reference",  # "reference": U[0,1) counted valid; "empty"
            bank_budget_gib=16.0,  # largest bank per device accepted at start
            search_chunk=16,  # at most this many image columns per search step and device (0: all)
            search_dtype="float32",  # similarity matmul of the bank search; "bfloat16" ~ fp16 autocast
            cross_image_norm="reference",  # "reference": both terms / Z1; "per_view": Z1, Z2
            cross_image_start_epoch=1,  # L_ci = 0 before this epoch (reference: 1)
        )
    )


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    """The COCO run, edited by the comma-separated `VARIANTS` named in ``arg``."""
    c = dino_coco.get_config()
    c.method = "cribo"
    c.crops.patch_size = 16  # emit global_pos: patch centres in original pixels (cribo.md §2)
    c.cribo = cribo_section()
    return common.apply_variants(c, arg, VARIANTS)


def _demo(c: mlc.ConfigDict) -> None:
    """The DINO demo (`configs/dino_coco.py:demo`: model, data, recipe, schedule; from scratch,
    as CrIBo's recipe) with CrIBo's two views only: 6×6 tokens per view, K = 8, an object head
    of 512, a bank of 512 images (16 steps), one group per batch; scored at start and end,
    the object matches drawn at the end (`configs/eval/cribo_matches.py`)."""
    dino_coco.VARIANTS["demo"](c)
    c.crops.n_local = 0
    c.cribo.update(dict(out_dim=512, k=8, queue_size=512, group=32))
    common.demo_evaluations(c)
    c.evals.matches = dict(config="configs/eval/cribo_matches.py:demo", every=0)


def _smoke(c: mlc.ConfigDict) -> None:
    """The demo in seconds: 2×2 tokens per view (2N = 8), K = 3, a bank of 16 images, groups of 4."""
    _demo(c)
    common.two_view_smoke(c)
    c.cribo.update(dict(out_dim=32, k=3, queue_size=16, group=4))


VARIANTS = {"demo": _demo, "smoke": _smoke}
