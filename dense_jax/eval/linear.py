"""Linear segmentation probe on a frozen backbone (evaluation.md §2a Leopart/NeCo, §2b CrOC).

One 1×1 convolution (D -> C, with bias, PyTorch default init) on the patch tokens. The
reference upsamples the tokens bilinearly to the label resolution before the head; because
bilinear weights sum to one this equals applying the head at g×g and upsampling the logits,
which is what we do (exact, and (L/g)² times cheaper).

- ``linear.variant="leopart"`` (§2a): last-block tokens, paired RandomResizedCrop(S, scale
  (0.8, 1)) + hflip, labels nearest S -> 100×100, SGD(lr 0.01, momentum 0.9, wd 1e-4 on weight
  and bias), lr ×0.1 at epoch 20, 25 epochs (the configs; the paper says 20).
- ``linear.variant="croc"`` (§2b): the last ``n_blocks`` blocks concatenated, labels at the full
  S×S resolution, Adam(1e-3), 45 (VOC) / 10 (COCO) epochs, 2a's augmentation and batch size.

Fixes of §9, by design: no checkpoint selection on val, the final head is evaluated once, on
the whole val split (no dropped batches), at ``eval_size`` (S, as ``eval_linear.py``).
``linear.augment=False`` trains on cached un-augmented features (fast, not the reference).
"""
from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P
from PIL import Image

from dense_jax.data.transforms import sample_crop_box
from dense_jax.eval import features as F
from dense_jax.eval import metrics, report


# ----------------------------------------------------------------------------- head and loss
def init_head(key: jax.Array, dim: int, num_classes: int) -> dict:
    """PyTorch Conv2d(D, C, 1) default init: weight and bias ~ U(±1/sqrt(D))."""
    bound = 1.0 / math.sqrt(dim)
    k_w, k_b = jax.random.split(key)
    return {"kernel": jax.random.uniform(k_w, (dim, num_classes), jnp.float32, -bound, bound),
            "bias": jax.random.uniform(k_b, (num_classes,), jnp.float32, -bound, bound)}


def logits(head: dict, feats: jax.Array, size: int) -> jax.Array:
    """(B, h, w, D) tokens -> (B, size, size, C) logits (head at g×g, then bilinear up)."""
    out = jnp.einsum("bhwd,dc->bhwc", feats, head["kernel"],
                     precision=jax.lax.Precision.HIGHEST) + head["bias"]
    return F.bilinear_upsample(out, size)


def loss_fn(head: dict, feats, labels, valid, num_classes: int, ignore_index: int) -> jax.Array:
    """Cross-entropy averaged over the valid pixels (GT != ignore, real samples), §2a/§8.14."""
    out = logits(head, feats, labels.shape[-1])
    labels = labels.astype(jnp.int32)
    keep = (labels != ignore_index) & (labels < num_classes) & valid[:, None, None]
    ce = optax.softmax_cross_entropy_with_integer_labels(out, jnp.where(keep, labels, 0))
    return jnp.sum(ce * keep) / jnp.maximum(jnp.sum(keep), 1)


def optimizer(cfg, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with coupled weight decay and a step schedule (2a) or Adam (2b)."""
    schedule = optax.piecewise_constant_schedule(
        cfg.lr, {int(m * steps_per_epoch): cfg.gamma for m in cfg.milestones})
    if cfg.optimizer == "sgd":
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                           optax.sgd(schedule, momentum=cfg.momentum))
    if cfg.optimizer == "adam":
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.adam(schedule))
    raise ValueError(f"unknown linear.optimizer {cfg.optimizer!r}; use sgd or adam")


# ----------------------------------------------------------------------------- data
def train_item(item: dict, rng: np.random.Generator, size: int, label_size: int, scale, ratio,
               hflip: float, mean, std) -> dict:
    """§2a train transform: paired RandomResizedCrop (image bilinear, mask nearest) to size²,
    hflip, normalisation; labels torch-nearest to label_size²."""
    from dense_jax.data.transforms import crop_resize_flip, normalize
    image = Image.fromarray(np.asarray(item["image"])).convert("RGB")
    box = sample_crop_box(rng, (image.height, image.width), scale, ratio)
    image, mask, _ = crop_resize_flip(image, box, size, Image.Resampling.BILINEAR, rng, hflip,
                                      Image.fromarray(np.asarray(item["mask"], np.uint8)))
    y = np.asarray(mask)
    return {"image": normalize(image, mean, std),
            "mask": F.nearest_resize(y, label_size) if label_size != size else y}


def _feature_batches(dense: dict, kind: str, batch_size: int, rng: np.random.Generator):
    """Shuffled, padded batches of cached features (the ``augment=False`` path)."""
    order = rng.permutation(len(dense["labels"]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = {"feats": dense[kind][idx], "mask": dense["labels"][idx],
                 "valid": np.ones(len(idx), bool)}
        yield F.pad_batch(batch, batch_size)


# ----------------------------------------------------------------------------- driver
def run(ctx: F.EvalContext) -> dict:
    """Train the probe on the train split, evaluate the final head on val (§2)."""
    cfg, data, inp = ctx.config.linear, ctx.config.data, ctx.config.input
    kind = "last_blocks" if cfg.variant == "croc" else "patch"
    if cfg.variant not in ("leopart", "croc"):
        raise ValueError(f"unknown linear.variant {cfg.variant!r}; use leopart or croc")
    size, c = inp.size, data.num_classes
    label_size = cfg.label_size or size
    extractor = ctx.extractor((kind,), cfg.n_blocks)
    bs = extractor.batch_size(cfg.batch_size)
    train_source = ctx.source(data.train_split, data.limit_train)
    steps_per_epoch = -(-len(train_source) // bs)
    tx = optimizer(cfg, steps_per_epoch)

    repl = NamedSharding(ctx.mesh, P())
    dim = jax.eval_shape(extractor, jax.ShapeDtypeStruct((bs, size, size, 3), jnp.float32))[kind].shape[-1]
    head = jax.device_put(init_head(jax.random.key(ctx.config.seed), dim, c), repl)
    opt_state = jax.device_put(tx.init(head), repl)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(head, opt_state, feats, labels, valid):
        loss, grads = jax.value_and_grad(loss_fn)(head, feats, labels, valid, c, data.ignore_index)
        updates, opt_state = tx.update(grads, opt_state, head)
        return optax.apply_updates(head, updates), opt_state, loss

    start = time.perf_counter()
    losses = []
    rng = np.random.default_rng(ctx.config.seed)
    dense_train = None
    if not cfg.augment:
        dense_train = ctx.dense(data.train_split, size=size, label_size=label_size,
                                limit=data.limit_train, kinds=(kind,), n_blocks=cfg.n_blocks)
    item = functools.partial(train_item, size=size, label_size=label_size, scale=cfg.crop_scale,
                             ratio=cfg.crop_ratio, hflip=cfg.hflip, mean=inp.mean, std=inp.std)
    for epoch in range(cfg.epochs):
        if cfg.augment:
            stream = F.batches(train_source, item, bs, seed=ctx.config.seed * 1000 + epoch,
                               shuffle=True, workers=inp.workers)
        else:
            stream = _feature_batches(dense_train, kind, bs, rng)
        epoch_losses = []
        for batch in stream:
            feats = (extractor(batch["image"])[kind] if cfg.augment
                     else extractor.to_device(batch["feats"]))
            head, opt_state, loss = step(head, opt_state, feats, extractor.to_device(batch["mask"]),
                                         extractor.to_device(batch["valid"]))
            epoch_losses.append(loss)
        losses.append(float(np.mean(jax.device_get(epoch_losses))))
    train_time = time.perf_counter() - start

    eval_size = cfg.eval_size or size
    val = ctx.dense(data.val_split, size=size, label_size=eval_size, limit=data.limit_val,
                    kinds=(kind,), n_blocks=cfg.n_blocks)
    cm, preds = predict_confusion(head, val[kind], val["labels"], extractor, c, data.ignore_index,
                                  ctx.config.output.n_show)
    scores = report.supervised_scores(cm, data.ignore_index)
    if ctx.workdir and len(preds):
        report.save_panels(ctx.path("linear_predictions.png"),
                           [[img, gt, p] for img, gt, p in zip(val["show"], val["labels"], preds)],
                           titles=("image", "ground truth", "linear probe"))
    return {"summary": {k: scores[k] for k in ("miou", "miou_hungarian", "miou_corrected")},
            "per_class_iou": scores["per_class_iou"], "pixel_accuracy": scores["pixel_accuracy"],
            "epoch_loss": losses, "train_time_s": train_time, "n_train": len(train_source),
            "n_val": len(val["labels"]), "variant": cfg.variant, "feature_dim": dim}


def predict_confusion(head: dict, feats: np.ndarray, labels: np.ndarray, extractor: F.Extractor,
                      num_classes: int, ignore_index: int, n_keep: int = 0):
    """(C, C) confusion matrix of argmax predictions at the labels' resolution over a whole
    split of cached features, and the first ``n_keep`` predicted maps (for the PNGs)."""
    size = labels.shape[-1]
    bs = extractor.batch_size(16)

    @jax.jit
    def batch_cm(head, f, y, valid):
        pred = jnp.argmax(logits(head, f, size), axis=-1)
        return metrics.confusion_matrix(pred, y, num_classes, valid=valid,
                                        ignore_index=ignore_index), pred

    acc = metrics.ConfusionAccumulator(num_classes, ignore_index=ignore_index)
    kept = []
    for start in range(0, len(labels), bs):
        n = len(labels[start:start + bs])
        batch = F.pad_batch({"f": feats[start:start + bs], "y": labels[start:start + bs],
                             "valid": np.ones(n, bool)}, bs)
        cm, pred = batch_cm(head, *(extractor.to_device(batch[k]) for k in ("f", "y", "valid")))
        acc.add(cm)
        if start < n_keep:
            kept.append(jax.device_get(pred)[:min(n, n_keep - start)])
    return acc.cm, (np.concatenate(kept)[:n_keep] if kept else np.zeros((0,)))
