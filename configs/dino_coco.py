"""DINO ViT-S/16 pre-trained on COCO train2017: the DINO (COCO) baseline of CrOC and CrIBo.

Settings: the CrOC appendix's DINO-on-COCO list (croc.md §1 paper column, "CrOC uses the
same setting"; cribo.md §1 vits16-coco): ViT-S/16, drop path 0.1, head out_dim 65536,
norm_last_layer False, teacher temperature 0.04 → 0.07 over 30 epochs, EMA 0.996 → 1,
lr 5e-4 per 256 images (batch 256 → peak 5e-4), min_lr 1e-5, 10 warm-up epochs, weight
decay 0.04 → 0.4, no gradient clipping, last layer frozen for 1 epoch, 300 epochs, two
224² global crops with scale (0.25, 1) and no local crops. Mixed precision: the reference
used fp16 autocast; here params and losses are fp32 and the backbone runs in bf16
(``--config.model.dtype=bfloat16``) where the hardware supports it; the default is fp32.

Reproduces (teacher backbone, evaluation.md): CrOC Table 1 "DINO (COCO)" linear mIoU
VOC / COCO-Things / COCO-Stuff 47.2 / 47.1 / 46.2; CrOC Table 3 K-means (K = GT)
5.2 / 9.4 / 14.0; CrIBo Table 1 DINO (COCO 300 ep) retrieval row; DAVIS-17 J&F 57.1.

Commands (from the repository root)::

  # full run: COCO train2017 images in /data/coco/train2017/*.jpg
  python -m dense_jax.main --config=configs/dino_coco.py --workdir=workdirs/dino_coco \\
      --config.data.root=/data/coco
  # COCO+ (train2017 + unlabeled2017)
  python -m dense_jax.main --config=configs/dino_coco.py \\
      --config.data.folders="('train2017','unlabeled2017')" --workdir=workdirs/dino_cocoplus
  # CPU demo on the built-in scenes (tiny ViT, 96 px, a few minutes)
  python -m dense_jax.main --config=configs/dino_coco.py:demo --workdir=workdirs/dino_demo
  # seconds, used by the tests
  python -m dense_jax.main --config=configs/dino_coco.py:smoke --workdir=/tmp/dino_smoke

Variants (``path:a,b`` applies a then b; see `common.apply_variants`):

  demo   built-in scenes, vit_demo16, 96² globals + 4 × 48² locals, batch 32, 8 epochs of 2048
         scenes (512 steps, about 6 min on a quiet 2-core CPU)
  smoke  demo, then a 2-block ViT on 48² scenes, two 16² locals, 2 epochs (tests, seconds)
  scenes_backbone  demo, 16 epochs: the run behind the shipped SCENES_BACKBONE (COMUS demo)
  scenes_backbone_long  demo on 8192 scenes, 12 epochs (3072 steps), scored every 512 steps:
         the run behind the shipped SCENES_BACKBONE_LONG (NeCo demo)
"""

from __future__ import annotations

import ml_collections as mlc

from configs import common


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    """The paper run, edited by the comma-separated `VARIANTS` named in ``arg``."""
    c = common.base()
    c.method = "dino"
    c.model.variant = "dino_vits16"
    c.model.drop_path_rate = 0.1

    common.coco_train2017(c, batch_size=256)

    c.crops.n_global = 2
    c.crops.global_size = 224
    c.crops.global_scale = (0.25, 1.0)
    c.crops.n_local = 0

    c.optim.lr = 5e-4
    c.optim.min_lr = 1e-5
    c.optim.warmup_epochs = 10
    c.optim.weight_decay = 0.04
    c.optim.weight_decay_end = 0.4
    c.optim.clip_grad = 0.0
    c.optim.freeze_last_layer = 1
    c.teacher.momentum = 0.996

    c.train.epochs = 300
    c.train.log_every = 50
    c.ckpt.every_steps = 2000

    # DINO loss and head (croc.md §6 "Global loss", "Head"; cribo.md §6).
    c.dino = mlc.ConfigDict(
        dict(
            out_dim=65536,
            hidden_dim=2048,
            bottleneck_dim=256,
            nlayers=3,
            norm_last_layer=False,
            student_temp=0.1,
            warmup_teacher_temp=0.04,
            teacher_temp=0.07,
            warmup_teacher_temp_epochs=30,
            center_momentum=0.9,
            centering="center",  # DINO; "sinkhorn_knopp": DINOv2's teacher targets
        )
    )

    return common.apply_variants(c, arg, VARIANTS)


def _demo(c: mlc.ConfigDict) -> None:
    """Built-in scenes, tiny ViT, a recipe that moves in CPU minutes (scenes_learnability.md):
    unscaled lr 5e-4 (the paper's per-256 scaling gives 6e-5 at batch 32, which trains
    nothing in 512 steps), teacher temperature 0.04 throughout, EMA 0.99, a 1024-way head with
    a normalised last layer, no frozen last layer, four 48² locals, weak colour jitter
    (no hue shift, no grayscale: the scenes' colour priors are a cue, as in photos)."""
    c.model.variant = "vit_demo16"
    common.demo_scenes(c, batch_size=32)
    c.crops.update(
        dict(
            global_size=96,
            global_scale=(0.3, 1.0),
            n_local=4,
            local_size=48,
            local_scale=(0.1, 0.3),
            jitter=(0.3, 0.3, 0.1, 0.0),
            gray_p=0.0,
            blur_radius=(0.1, 1.0),
        )
    )
    c.dino.update(
        dict(
            out_dim=1024,
            hidden_dim=512,
            bottleneck_dim=128,
            norm_last_layer=True,
            warmup_teacher_temp=0.04,
            teacher_temp=0.04,
            warmup_teacher_temp_epochs=1,
        )
    )
    common.demo_schedule(c, epochs=8)
    c.optim.update(
        dict(
            lr=5e-4,
            scale_lr_by_batch=False,
            warmup_epochs=1,
            min_lr=1e-5,
            weight_decay_end=0.04,
            freeze_last_layer=0,
        )
    )
    c.teacher.momentum = 0.99


def _smoke(c: mlc.ConfigDict) -> None:
    """The demo in seconds; two local crops so the multi-crop path is exercised too."""
    _demo(c)
    common.smoke(c, num_examples=64, ckpt_every=4)
    c.dino.update(dict(out_dim=64, hidden_dim=32, bottleneck_dim=16))
    c.optim.freeze_last_layer = 1  # the paper's: the tests check the frozen first epoch


def _scenes_backbone(c: mlc.ConfigDict) -> None:
    """The demo recipe, twice as long: the run behind `dense_jax.models.SCENES_BACKBONE` (the
    COMUS demo's backbone; benchmarks/scenes_backbone.py)."""
    _demo(c)
    c.train.epochs = 16


def _scenes_backbone_long(c: mlc.ConfigDict) -> None:
    """The demo recipe, six times as long, on 8192 scenes (12 epochs, 3072 steps): the run
    behind `dense_jax.models.SCENES_BACKBONE_LONG` (the NeCo demo's start). The `:demo`
    protocols score the teacher every 512 steps; they read the teacher and leave the training
    state alone."""
    _demo(c)
    c.data.num_examples = 8192
    c.train.update(dict(epochs=12, log_every=64))
    c.ckpt.every_steps = 512
    common.demo_evaluations(c, every=512)


VARIANTS = {
    "demo": _demo,
    "smoke": _smoke,
    "scenes_backbone": _scenes_backbone,
    "scenes_backbone_long": _scenes_backbone_long,
}
