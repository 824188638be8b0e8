"""Linear segmentation probe on a frozen backbone (evaluation.md §2a Leopart/NeCo, §2b CrOC,
§2c CrIBo's Segmenter-style linear decoder), trained through the one trainer.

The probe is the supervised segmentation method (``dense_jax.methods.segmentation``: a 1×1
convolution D → C with bias, PyTorch default init, on the token map; logits bilinearly
upsampled to the label resolution; cross-entropy over the labelled pixels) with a frozen
backbone and no teacher, run by the training loop that the CLI hands to the protocol
(``ctx.fit``). The training config is ``config.trainer`` (the shared training defaults) with
the probe's recipe from ``config.linear`` filled in:

- ``linear.variant="leopart"`` (§2a): last-block tokens, paired RandomResizedCrop(S, scale
  (0.8, 1)) + hflip, labels nearest S -> 100×100, SGD(lr 0.01, momentum 0.9, wd 1e-4 on weight
  and bias), lr ×0.1 at epoch 20, 25 epochs (the configs; the paper says 20).
- ``linear.variant="croc"`` (§2b): the last ``n_blocks`` blocks concatenated, labels at the full
  S×S resolution, Adam(1e-3), 45 (VOC) / 10 (COCO) epochs, 2a's augmentation and batch size.
- ``linear.variant="segmenter"`` (§2c): last-layer tokens (or the last 4 concatenated) on
  512² crops, a fixed iteration count (``linear.iterations``), Adam with a poly schedule, the
  best of ``linear.lr_sweep``.

Fixes of §9, by design: no checkpoint selection on val, the final head is evaluated once, on
the whole val split, at ``eval_size`` (S, as ``eval_linear.py``). ``linear.augment=False``
trains the head alone on cached un-augmented features (fast, not the reference).
"""

from __future__ import annotations

import os
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from dense_jax.data.arrays import ArraySource
from dense_jax.eval import features as F
from dense_jax.eval import metrics, report
from dense_jax.methods import segmentation

VARIANTS = ("leopart", "croc", "segmenter")


def probe_config(
    config: mlc.ConfigDict,
    model: dict | None,
    kind: str,
    dim: int,
    lr: float,
    batch_size: int,
    steps_per_epoch: int,
) -> mlc.ConfigDict:
    """The segmentation method's training config for this probe: ``config.trainer`` with
    the evaluation's dataset, backbone (``model``; None: head alone on cached features) and
    ``config.linear``'s recipe."""
    lin, data, inp = config.linear, config.data, config.input
    c = mlc.ConfigDict(config.trainer.to_dict())
    c.method, c.seed = "segmentation", config.seed
    c.mesh.shape = tuple(config.mesh.shape)
    c.teacher.ema = False
    c.model = mlc.ConfigDict(
        {"variant": ""}
        if model is None
        else {**model, "drop_path_rate": 0.0, "n_last_blocks": max(lin.n_blocks, 1)}
    )
    c.crops.global_size = inp.size
    c.segmentation.update(
        dict(
            num_classes=data.num_classes,
            ignore_index=data.ignore_index,
            features=kind,
            n_blocks=lin.n_blocks,
            head="linear",
            feature_dim=dim,
            freeze_backbone=True,
            label_size=lin.label_size or inp.size,
            crop_scale=tuple(lin.crop_scale),
            crop_ratio=tuple(lin.crop_ratio),
            hflip=lin.hflip,
            augment=True,
        )
    )
    c.optim.update(
        dict(
            name=lin.optimizer,
            lr=lr,
            scale_lr_by_batch=False,
            min_lr=lin.min_lr,
            warmup_epochs=0,
            weight_decay=lin.weight_decay,
            weight_decay_end=lin.weight_decay,
            clip_grad=0.0,
            freeze_last_layer=0,
            sgd_momentum=lin.momentum,
            schedule=lin.schedule,
            milestones=tuple(lin.milestones),
            gamma=lin.gamma,
            power=lin.power,
        )
    )
    c.optim.lr_scale = mlc.ConfigDict(dict(backbone=0.0, head=1.0, last_layer=1.0))
    c.data.update(dict(batch_size=batch_size, workers=inp.workers))
    c.train.update(dict(epochs=lin.epochs, max_steps=lin.iterations, log_every=steps_per_epoch))
    c.ckpt.update(dict(every_steps=10**9, keep=1, async_save=False))
    return c


def _train_source(ctx: F.EvalContext, kind: str, size: int, label_size: int):
    """Images + masks (augmented by the trainer), or cached features + labels."""
    cfg, data = ctx.config.linear, ctx.config.data
    if cfg.augment:
        return ctx.source(data.train_split, data.limit_train)
    dense = ctx.dense(
        data.train_split,
        size=size,
        label_size=label_size,
        limit=data.limit_train,
        kinds=(kind,),
        n_blocks=cfg.n_blocks,
    )
    return ArraySource({"feats": dense[kind], "mask": dense["labels"]})


def run(ctx: F.EvalContext) -> dict:
    """Train the probe on the train split, evaluate the final head on val (§2)."""
    cfg, data, inp = ctx.config.linear, ctx.config.data, ctx.config.input
    if cfg.variant not in VARIANTS:
        raise ValueError(f"unknown linear.variant {cfg.variant!r}; use {', '.join(VARIANTS)}")
    if ctx.fit is None:
        raise ValueError(
            "the linear probe trains through the trainer: run it from "
            "dense_jax.evaluate or the training CLI (EvalContext.fit is unset)"
        )
    if cfg.augment and ctx.model_config is None:
        raise ValueError(
            "linear.augment=True runs the backbone inside the trainer and needs its "
            "model config (EvalContext.model_config)"
        )
    kind = (
        "patch"
        if cfg.variant == "leopart" or (cfg.variant == "segmenter" and cfg.n_blocks == 1)
        else "last_blocks"
    )
    size, c = inp.size, data.num_classes
    label_size = cfg.label_size or size
    extractor = ctx.extractor((kind,), cfg.n_blocks)
    bs = extractor.batch_size(cfg.batch_size)
    dim = jax.eval_shape(extractor, jax.ShapeDtypeStruct((bs, size, size, 3), jnp.float32))[kind].shape[-1]
    source = _train_source(ctx, kind, size, label_size)
    model = ctx.model_config if cfg.augment else None

    eval_size = cfg.eval_size or size
    val = ctx.dense(
        data.val_split,
        size=size,
        label_size=eval_size,
        limit=data.limit_val,
        kinds=(kind,),
        n_blocks=cfg.n_blocks,
    )
    start = time.perf_counter()
    sweep = []
    steps_per_epoch = len(source) // bs
    for lr in tuple(cfg.lr_sweep) or (cfg.lr,):
        train_config = probe_config(ctx.config, model, kind, dim, lr, bs, max(steps_per_epoch, 1))
        with tempfile.TemporaryDirectory(prefix="linear_probe_") as workdir:
            state = ctx.fit(train_config, segmentation, source, workdir, ctx.params if cfg.augment else None)
            losses = [
                r["loss"] for r in report.read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "loss" in r
            ]
        cm, preds = predict_confusion(
            state,
            train_config,
            val[kind],
            val["labels"],
            extractor,
            c,
            data.ignore_index,
            ctx.config.output.n_show,
        )
        sweep.append((report.supervised_scores(cm, data.ignore_index), preds, lr, losses))
    train_time = time.perf_counter() - start
    scores, preds, best_lr, losses = max(sweep, key=lambda s: s[0]["miou"])
    if ctx.workdir and len(preds):
        report.save_panels(
            ctx.path("linear_predictions.png"),
            [[img, gt, p] for img, gt, p in zip(val["show"], val["labels"], preds)],
            titles=("image", "ground truth", "linear probe"),
        )
    result = {
        "summary": {k: scores[k] for k in ("miou", "miou_hungarian", "miou_corrected")},
        "per_class_iou": scores["per_class_iou"],
        "pixel_accuracy": scores["pixel_accuracy"],
        "epoch_loss": losses,
        "train_time_s": train_time,
        "n_train": len(source),
        "n_val": len(val["labels"]),
        "variant": cfg.variant,
        "feature_dim": dim,
    }
    if len(sweep) > 1:
        result.update(best_lr=best_lr, lr_sweep={str(lr): s["miou"] for s, _, lr, _ in sweep})
    return result


def predict_confusion(
    state,
    train_config: mlc.ConfigDict,
    feats: np.ndarray,
    labels: np.ndarray,
    extractor: F.Extractor,
    num_classes: int,
    ignore_index: int,
    n_keep: int = 0,
):
    """(C, C) confusion matrix of the trained head's argmax predictions at the labels'
    resolution over a whole split of cached features, and the first ``n_keep`` predicted maps
    (for the PNGs)."""
    size = labels.shape[-1]
    bs = extractor.batch_size(16)
    params = {"backbone": {}, "head": state.params["head"]}

    @jax.jit
    def batch_cm(params, model_state, f, y, valid):
        logits = segmentation.predict(params, model_state, {"feats": f}, train_config, size)["logits"]
        pred = jnp.argmax(logits, axis=-1)
        return metrics.confusion_matrix(pred, y, num_classes, valid=valid, ignore_index=ignore_index), pred

    acc = metrics.ConfusionAccumulator(num_classes, ignore_index=ignore_index)
    kept = []
    for start in range(0, len(labels), bs):
        n = len(labels[start : start + bs])
        batch = F.pad_batch(
            {"f": feats[start : start + bs], "y": labels[start : start + bs], "valid": np.ones(n, bool)}, bs
        )
        cm, pred = batch_cm(
            params, state.model_state, *(extractor.to_device(batch[k]) for k in ("f", "y", "valid"))
        )
        acc.add(cm)
        if start < n_keep:
            kept.append(jax.device_get(pred)[: min(n, n_keep - start)])
    return acc.cm, (np.concatenate(kept)[:n_keep] if kept else np.zeros((0,)))
