"""Supervised semantic segmentation: a per-pixel cross-entropy on a ViT backbone + head.

One method serves the linear probes (evaluation.md §2a Leopart/NeCo, §2b CrOC, §2c CrIBo's
Segmenter-style linear decoder: frozen backbone, 1×1 linear head), fine-tuning (COMUS
self-training on pseudo-masks: ``freeze_backbone=False``, conv decoder) and any supervised
baseline, all through the one trainer (``config.teacher.ema=False``: no teacher).

Per step: features of kind ``segmentation.features`` (``patch`` or the last ``n_blocks``
blocks concatenated) → head on the g×g token map → bilinear upsampling of the logits to the
label resolution → cross-entropy averaged over the pixels whose label is neither
``ignore_index`` nor ≥ ``num_classes``. Applying the head at g×g and then upsampling equals
the references' upsample-then-1×1-conv, since bilinear weights sum to one (exact, and
(L/g)² times cheaper). The conv decoder (3×3 conv → BatchNorm → ReLU → 1×1 conv) keeps its
BatchNorm statistics in the state's ``model_state``.

A frozen backbone gets no gradient (stop_gradient) and, with ``optim.lr_scale.backbone=0``
(checked at init), no update. ``config.model.variant=""`` trains the head alone on
precomputed features (batches of ``feats`` (B, g, g, feature_dim) + ``mask``: the linear
probe's un-augmented fast path).
Config section ``config.segmentation``: num_classes, ignore_index, features, n_blocks,
head ("linear" | "conv"), conv_dim, feature_dim, freeze_backbone, label_size (0 = the crop size), and the
input recipe (crop size = ``config.crops.global_size``): crop_scale, crop_ratio, hflip,
augment (False: squash to the crop size, no randomness).
"""

from __future__ import annotations

import math

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax

from dense_jax.core.context import LossOutput
from dense_jax.data.paired import PassThrough, SegmentationCrops
from dense_jax.models import build
from dense_jax.models import features as feature_kinds
from dense_jax.ops.resize import bilinear_upsample


def _torch_uniform(fan_in: int):
    """PyTorch's default Conv2d/Linear init for weight and bias: U(±1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class LinearHead(nn.Module):
    """A 1×1 convolution (D → C, with bias) on a token map, PyTorch default init."""

    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        init = _torch_uniform(x.shape[-1])
        return nn.Dense(
            self.num_classes,
            kernel_init=init,
            bias_init=init,
            precision=jax.lax.Precision.HIGHEST,
            name="classifier",
        )(x)


class ConvHead(nn.Module):
    """3×3 conv → BatchNorm → ReLU → 1×1 conv (a small decoder for fine-tuning)."""

    num_classes: int
    dim: int = 256

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.dim, (3, 3), padding="SAME", use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(x)
        return nn.Dense(self.num_classes, name="classifier")(nn.relu(x))


def heads(config: mlc.ConfigDict) -> nn.Module:
    s = config.segmentation
    if s.head == "linear":
        return LinearHead(s.num_classes)
    if s.head == "conv":
        return ConvHead(s.num_classes, s.conv_dim)
    raise ValueError(f"unknown segmentation.head {s.head!r}; use linear or conv")


def head_input_shape(config: mlc.ConfigDict) -> tuple[int, ...]:
    """(1, g, g, C): the crop's token map, C the width of the chosen feature kind (or
    ``segmentation.feature_dim`` for a head-only run on precomputed features)."""
    s = config.segmentation
    if not config.model.variant:
        return (1, 1, 1, s.feature_dim)
    width = feature_kinds.width(build.backbone(config.model).embed_dim, s.features, s.n_blocks)
    return build.head_input_shape(config, "map", width)


def init_aux(config: mlc.ConfigDict, rng: jax.Array) -> dict:
    """No aux state. Checks that a frozen backbone is also left out of the optimizer: with
    ``optim.lr_scale.backbone`` > 0 the decoupled weight decay would still shrink it."""
    del rng
    if config.segmentation.freeze_backbone and config.optim.lr_scale.backbone != 0:
        raise ValueError(
            "segmentation.freeze_backbone=True needs optim.lr_scale.backbone=0 "
            f"(got {config.optim.lr_scale.backbone})"
        )
    return {}


def transform(config: mlc.ConfigDict) -> grain.transforms.RandomMap:
    """Paired crops of image + mask; precomputed features (no backbone) pass unchanged."""
    s = config.segmentation
    if not config.model.variant:
        return PassThrough()
    return SegmentationCrops(
        size=config.crops.global_size,
        label_size=s.label_size,
        scale=tuple(s.crop_scale),
        ratio=tuple(s.crop_ratio),
        hflip=s.hflip,
        augment=s.augment,
    )


def token_logits(params, model_state, batch: dict, config: mlc.ConfigDict, train: bool, rng=None):
    """(B, g, g, C) logits and the head's new collections (``{}`` without BatchNorm).

    The head reads ``batch["feats"]`` (precomputed frozen features) when present, else the
    backbone's features of ``batch["image"]``."""
    s = config.segmentation
    if "feats" in batch:
        feats = batch["feats"]
    else:
        vit = build.backbone(config.model)
        fine_tune = train and not s.freeze_backbone
        if not fine_tune:
            vit = vit.clone(drop_path_rate=0.0)
        outputs = vit.apply(
            {"params": params["backbone"]},
            batch["image"],
            train=fine_tune,
            rngs={"dropout": rng} if fine_tune else None,
        )
        feats = feature_kinds.select(outputs, s.features, s.n_blocks)
    feats = feats.astype(jnp.float32)
    if s.freeze_backbone:
        feats = jax.lax.stop_gradient(feats)
    variables = {"params": params["head"], **model_state.get("head", {})}
    head = heads(config)
    if train and model_state:
        logits, new = head.apply(variables, feats, train=True, mutable=list(model_state["head"]))
        return logits, {"head": dict(new)}
    return head.apply(variables, feats, train=False), model_state


def pixel_loss(logits, labels, num_classes: int, ignore_index: int):
    """(cross-entropy, pixel accuracy) over the pixels with a label in [0, num_classes) other
    than `ignore_index`; logits (B, L, L, C), labels (B, L, L)."""
    labels = labels.astype(jnp.int32)
    keep = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(keep, labels, 0))
    count = jnp.maximum(keep.sum(), 1)
    correct = (jnp.argmax(logits, -1) == labels) & keep
    return (ce * keep).sum() / count, correct.sum() / count


def loss(params, teacher, aux, batch, ctx):
    """Per-pixel cross-entropy of the student (no teacher). Returns (loss, LossOutput)."""
    del teacher
    config, s = ctx.config, ctx.config.segmentation
    logits, model_state = token_logits(params, ctx.model_state, batch, config, True, ctx.rng)
    labels = batch["mask"]
    logits = bilinear_upsample(logits, labels.shape[1:3])
    value, accuracy = pixel_loss(logits, labels, s.num_classes, s.ignore_index)
    return value, LossOutput({"pixel_accuracy": accuracy}, aux, model_state or None)


def predict(params, model_state, batch: dict, config: mlc.ConfigDict, size) -> dict:
    """{"logits": (B, size, size, C)} of ``batch`` (``image`` or ``feats``), inference mode."""
    logits, _ = token_logits(params, model_state, batch, config, False)
    return {"logits": bilinear_upsample(logits, size)}
