"""NeCo post-pretraining of DINOv2 ViT-S/14 with registers on COCO (neco.md; the headline run).

Follows the released code's model config ``small/neco_dinov2r`` (neco.md §5): weights
``dinov2_vits14_reg4_pretrain.pth``, 4 registers, NeCo's position-embedding resize
(+0.1 offset, no antialias), COCO train2017, 2 global 518² + 4 local 98² crops with the
overlap constraint, batch 64, 25 epochs (46,200 steps), teacher-token queue 8192 per global
crop, 49 references per image, bitonic sort with cauchy swaps, β = 100 for student and
teacher, one-directional teacher → student cross-entropy; AdamW with backbone lr 1e-5 and
head lr 1e-4, cosine to 0 without warm-up, weight decay cosine 0.04 → 0.5 (no decay on
biases and 1-D params), EMA 0.9995 → 1, no clipping, fp32.

Plain reference bugs fixed (neco.md §8): one fill counter per queue, teacher outputs under
stop_gradient, clamped log (`neco.log_eps`), EMA after the optimizer step, capped crop
rejection loop. The teacher head is initialised independently of the student's, as the
code does (`neco.independent_teacher_head=False` copies the student instead).

Targets (neco.md §6, ViT-S/14 DINOv2R → NeCo, mIoU): linear VOC 81.3, COCO-Things 82.3,
COCO-Stuff 62.0, ADE20K 40.1; Hummingbird VOC 1/128…1/1 66.5 / 70.3 / 76.3 / 78.9, ADE
23.7 / 27.2 / 34.0 / 39.8; K-means VOC (GT / 300 / 500) 17.8 / 69.4 / 72.6.

Commands::

  # headline run: COCO images in data/coco/train2017, weights in data/weights/
  python -m dense_jax.main --config=configs/neco_dinov2.py --workdir=workdirs/neco_s14r
  python -m dense_jax.main --config=configs/neco_dinov2.py:vitb14 --workdir=workdirs/neco_b14r
  # ViT-B/14 with the paper's 224² global crops
  python -m dense_jax.main --config=configs/neco_dinov2.py:vitb14,paper --workdir=workdirs/neco_b14r_224
  # CPU demo on the built-in scenes from the shipped long scenes backbone; prints a
  # before/after table of the :demo linear probe, K-means and Hummingbird; 512 steps, about
  # 3 min on a quiet 2-core CPU, evaluations included
  python -m dense_jax.main --config=configs/neco_dinov2.py:demo --workdir=workdirs/neco_demo

Variants (``path:a,b`` applies a then b; see `common.apply_variants`):

  vitb14       ViT-B/14 with registers, batch 16, backbone lr 1e-6 (head 1e-4)
  dinov2       DINOv2 ViT-S/14 weights without registers
  xr           register weights with the registers dropped
  dino_vits16  DINO ViT-S/16 init, 224² globals, batch 45, 50 epochs, references from the batch
  paper        224² global crops, as the paper's text
  demo         built-in scenes from the shipped long scenes backbone (vit_demo16), 96²/48²
               crops, 4 epochs, evaluations before and after (CPU)
  smoke        demo, then a 2-block random-init ViT on 48² scenes, 2 epochs (tests, seconds)
"""

from __future__ import annotations

import ml_collections as mlc

from configs import common
from dense_jax.models.registry import SCENES_BACKBONE_HINT, SCENES_BACKBONE_LONG

_WEIGHTS = "data/weights/{}_pretrain.pth"


def neco_section() -> mlc.ConfigDict:
    """NeCo loss/head settings of the released code (neco.md §2–§5); paper variants as flags."""
    return mlc.ConfigDict(
        dict(
            hidden_dim=2048,
            out_dim=256,
            nlayers=3,
            roi_size=7,  # aligned grid side: 49 patches and 49 references per image
            queue_length=8192,  # per global crop; 0 = references from the batch
            queue_push_per_image=10,  # tokens pushed per image and global crop (min(10B, Q))
            network="bitonic",  # or "odd_even"
            relaxation="cauchy",  # diffsort 0.2.0's default; the paper's text: logistic_phi
            art_lambda=0.25,  # λ of logistic_phi
            student_steepness=100.0,
            teacher_steepness=100.0,
            log_eps=1e-30,  # clamp inside the log (the code has none; fix)
            sort_row_chunk=0,  # rows sorted at a time (0 = all); CPU: 98 ≈ 1.8× cheaper loss
            symmetric=False,  # paper: CE(Pt, Ps) + CE(Ps, Pt)
            sort_distance=False,  # paper: sort 1 - cos; code: cos
            refs_from_student=False,  # paper: references from the student's batch tokens
            independent_teacher_head=True,  # code: teacher head drawn independently at init
        )
    )


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    """The headline run, edited by the comma-separated `VARIANTS` named in ``arg``."""
    c = common.base()
    c.method = "neco"
    c.model.variant = "dinov2_vits14_reg4"
    c.model.drop_path_rate = 0.1
    c.model.interp_offset = 0.1  # NeCo's resize (neco.md §2), not the hub's antialias
    c.model.interp_antialias = False
    c.init_from = _WEIGHTS.format("dinov2_vits14_reg4")

    common.coco_train2017(c, batch_size=64)

    # neco.md §1: Leopart's transforms, NeCo's one multi-crop recipe (pipeline.crop_spec): bilinear,
    # strong jitter, blur p .5, no flip/solarize, overlap > 1% (2% between globals), gc/all boxes.
    c.crops = mlc.ConfigDict(
        dict(
            n_global=2,
            global_size=518,
            global_scale=(0.25, 1.0),
            n_local=4,
            local_size=98,
            local_scale=(0.05, 0.25),
            interpolation="bilinear",
            flip_p=0.0,
            jitter=(0.8, 0.8, 0.8, 0.2),
            jitter_p=0.8,
            gray_p=0.2,
            global_blur_p=(0.5, 0.5),
            local_blur_p=0.5,
            global_solarize_p=(0.0, 0.0),
            min_overlap=0.01,
            pair_boxes=True,
        )
    )

    c.optim.lr = 1e-5  # backbone; absolute, not scaled by batch size
    c.optim.scale_lr_by_batch = False
    # head 1e-4; "unused" = DINOv2's mask_token, which NeCo never steps (methods/neco.py)
    c.optim.lr_scale = mlc.ConfigDict(dict(backbone=1.0, head=10.0, unused=0.0))
    c.optim.min_lr = 0.0
    c.optim.warmup_epochs = 0
    c.optim.weight_decay = 0.04
    c.optim.weight_decay_end = 0.5
    c.optim.clip_grad = 0.0
    c.optim.freeze_last_layer = 0
    c.teacher.momentum = 0.9995

    c.train.epochs = 25
    c.train.log_every = 50
    c.ckpt.every_steps = 1000
    c.neco = neco_section()

    return common.apply_variants(c, arg, VARIANTS)


def _vitb14(c: mlc.ConfigDict) -> None:
    """ViT-B/14 with registers: batch 16, backbone lr 1e-6, head 1e-4."""
    c.model.variant = "dinov2_vitb14_reg4"
    c.init_from = _WEIGHTS.format("dinov2_vitb14_reg4")
    c.data.batch_size = 16
    c.optim.lr = 1e-6
    c.optim.lr_scale.head = 100.0


def _dinov2(c: mlc.ConfigDict) -> None:
    """DINOv2 ViT-S/14 without registers."""
    c.model.variant = "dinov2_vits14"
    c.init_from = _WEIGHTS.format("dinov2_vits14")


def _xr(c: mlc.ConfigDict) -> None:
    """Register weights, registers switched off (code: strict=False drops them)."""
    c.model.num_registers = 0
    c.init_from_ignore = ("register_tokens",)


def _dino_vits16(c: mlc.ConfigDict) -> None:
    """neco.md §5 DINO family: v1 backbone, 224/98, no queue."""
    c.model = mlc.ConfigDict(dict(variant="dino_vits16", drop_path_rate=0.1, dtype="float32"))
    c.init_from = "data/weights/dino_deitsmall16_pretrain.pth"
    c.crops.global_size = 224
    c.data.batch_size = 45
    c.train.epochs = 50
    c.optim.lr = 1e-6
    c.optim.lr_scale.head = 100.0
    c.neco.queue_length = 0


def _paper(c: mlc.ConfigDict) -> None:
    """The paper's text: 224² global crops."""
    c.crops.global_size = 224


def _demo(c: mlc.ConfigDict) -> None:
    """Built-in scenes from the shipped long scenes backbone (`dense_jax.models.SCENES_BACKBONE_LONG`,
    a DINO-trained vit_demo16 standing in for DINOv2); 96² globals and 48² locals, 4×4 aligned
    grid (16 refs), batch 16, 4 epochs of 2048 scenes (512 steps). Demo-only changes, beside the
    sizes: backbone lr 2e-4 (paper 1e-5) and teacher EMA 0.99 (paper 0.9995): with the paper's
    values the teacher moves a few per cent of the way in CPU minutes and its scores stay at the
    start (±0.1); colour jitter without hue shift or grayscale (the scenes' class colours are a
    cue, as in photos). The linear probe, K-means and Hummingbird (`:demo`) score the teacher
    before and after (benchmarks/scenes_learnability.md)."""
    c.model = mlc.ConfigDict(dict(variant="vit_demo16", drop_path_rate=0.1, dtype="float32"))
    c.init_from = SCENES_BACKBONE_LONG
    c.init_from_hint = SCENES_BACKBONE_HINT
    common.demo_scenes(c, batch_size=16)
    c.crops.update(dict(global_size=96, local_size=48, n_local=2, jitter=(0.4, 0.4, 0.2, 0.0), gray_p=0.0))
    c.neco.update(dict(hidden_dim=512, out_dim=128, roi_size=4, queue_length=1024))
    c.optim.lr = 2e-4
    c.teacher.momentum = 0.99
    common.demo_schedule(c, epochs=4)
    common.demo_evaluations(c)


def _smoke(c: mlc.ConfigDict) -> None:
    """The demo in seconds, from a random init."""
    _demo(c)
    c.init_from = ""
    c.evals = mlc.ConfigDict()
    common.smoke(c, num_examples=32, ckpt_every=2)
    # 32 tokens pushed per step and global crop (all of them), so the queue of 128 fills in 4
    c.neco.update(dict(hidden_dim=32, out_dim=16, roi_size=3, queue_length=128, queue_push_per_image=4))


VARIANTS = {
    "vitb14": _vitb14,
    "dinov2": _dinov2,
    "xr": _xr,
    "dino_vits16": _dino_vits16,
    "paper": _paper,
    "demo": _demo,
    "smoke": _smoke,
}
