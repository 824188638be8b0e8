"""CrIBo pre-trained on ImageNet-1k: ViT-S/16 (default) and ViT-B/16 (``:vitb16``) (cribo.md).

ViT-S/16 (``vits16-in_args.json``, paper): the COCO recipe (`configs/cribo_coco.py`) with
batch 1024 (8 × 128, peak lr 5e-4·1024/256 = 2e-3), 800 epochs, K = 32, λ_pos = 1, and the
reference's per-GPU batch ``cribo.group`` = 128.

ViT-B/16 (``vitb16-in_args.json``): fp32 (the reference turns fp16 off), per-tensor gradient
clipping 0.3, last layers frozen for 3 epochs, teacher temperature warm-up over 50 epochs,
norm_last_layer True, lr 7.5e-4 per 256 (peak 3e-3), min_lr 2e-6, 400 epochs, K = 32,
λ_pos = 1; batch 1024 as the paper (the JSON's 64 per GPU implies 16 GPUs), ``cribo.group`` = 64
(the JSON's per-GPU batch). Paper-vs-code differences as `configs/cribo_coco.py`.

Data: ImageNet-1k train as raw folders (``data/imagenet/train/<wnid>/*.JPEG``, default) or a
prepared TFDS ``imagenet2012`` (``:tfds``; `dense_jax.data.sources` says how to prepare it).

Reproduces (teacher backbone, evaluation.md "seed numbers"): CrIBo Table 1, dense
nearest-neighbour retrieval (Hummingbird, CrIBo's variant k = 50, `configs/eval/hbird_voc.py`,
`hbird_ade.py`), CrIBo (IN) row 13.7 16.5 23.2 28.3 | 52.7 59.3 69.3 73.2; Table 2, the MMSeg
Segmenter linear decoder (protocol 2c, `configs/eval/segmenter_voc.py`, `segmenter_ade.py`),
CrIBo (IN) Pascal Context / VOC / COCO-Stuff-164k / ADE 41.7 / 73.7 / 33.8 / 31.9; Table 4
(ViT-B/16 rows; its numbers are not in evaluation.md yet).

Commands (from the repository root)::

  python -m dense_jax.main --config=configs/cribo_in1k.py --workdir=workdirs/cribo_in1k_vits16
  python -m dense_jax.main --config=configs/cribo_in1k.py:vitb16 --workdir=workdirs/cribo_in1k_vitb16
  python -m dense_jax.main --config=configs/cribo_in1k.py:tfds \\
      --config.data.tfds_data_dir=/data/tfds --workdir=workdirs/cribo_in1k_vits16
  # CPU demo / seconds-long smoke run on the built-in scenes (λ_pos = 1 of this recipe)
  python -m dense_jax.main --config=configs/cribo_in1k.py:demo --workdir=workdirs/cribo_in1k_demo
  python -m dense_jax.main --config=configs/cribo_in1k.py:smoke --workdir=/tmp/cribo_in1k_smoke

Variants (``path:a,b`` applies a then b):

  vitb16  ViT-B/16 with its own settings (above)
  tfds    read ImageNet through TFDS (array_record) instead of the folder layout
  demo    `configs/cribo_coco.py:demo` with λ_pos = 1
  smoke   `configs/cribo_coco.py:smoke` with λ_pos = 1
"""

from __future__ import annotations

import ml_collections as mlc

from configs import common, cribo_coco


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    """The ViT-S/16 ImageNet run, edited by the comma-separated `VARIANTS` named in ``arg``."""
    c = cribo_coco.get_config()
    c.data.update(dict(name="imagenet", root="data/imagenet", folders=("train",), batch_size=1024))
    c.train.epochs = 800
    c.cribo.update(dict(k=32, pos_alpha=(1.0, 1.0), group=128))
    return common.apply_variants(c, arg, VARIANTS)


def _vitb16(c: mlc.ConfigDict) -> None:
    """ViT-B/16 (cribo.md §1 vitb16-in_args.json)."""
    c.model.update(dict(variant="dino_vitb16", dtype="float32"))
    c.optim.update(dict(lr=7.5e-4, min_lr=2e-6, clip_grad=0.3, freeze_last_layer=3))
    c.dino.update(dict(norm_last_layer=True, warmup_teacher_temp_epochs=50))
    c.train.epochs = 400
    c.cribo.group = 64


def _tfds(c: mlc.ConfigDict) -> None:
    """ImageNet-1k train from a prepared TFDS ``imagenet2012``."""
    c.data.update(dict(source="tfds", tfds_name="imagenet2012", split="train"))


def _demo(c: mlc.ConfigDict) -> None:
    cribo_coco.VARIANTS["demo"](c)
    c.cribo.pos_alpha = (1.0, 1.0)


def _smoke(c: mlc.ConfigDict) -> None:
    cribo_coco.VARIANTS["smoke"](c)
    c.cribo.pos_alpha = (1.0, 1.0)


VARIANTS = {"vitb16": _vitb16, "tfds": _tfds, "demo": _demo, "smoke": _smoke}
