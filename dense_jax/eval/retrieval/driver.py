"""The Hummingbird driver (evaluation.md §1): augmented memory items, memory building, the
val queries and ``run`` over the fractions and seeds."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from dense_jax.data import transforms
from dense_jax.data.sources import Subset
from dense_jax.eval import features as F
from dense_jax.eval import metrics, report
from dense_jax.eval.retrieval import figures, kernels, subsets
from dense_jax.ops.knn import knn


# ----------------------------------------------------------------------------- memory items
def hbird_jitter(img: Image.Image, rng: np.random.Generator, strength: float, p: float) -> Image.Image:
    """hbird's colour jitter: brightness, contrast, saturation, hue (in that order), each a
    separate ``RandomApply(ColorJitter(<one>=strength), p)``."""
    for i in range(4):
        if rng.random() < p:
            one = [0.0] * 4
            one[i] = strength
            img = transforms._color_jitter(img, rng, tuple(one))
    return img


def memory_item(
    item: dict,
    rng: np.random.Generator,
    size: int,
    scale,
    ratio,
    jitter: float,
    jitter_p: float,
    ignore_to: int,
    mean,
    std,
) -> dict:
    """One augmented memory view (§1): jitter, paired RRC (image bilinear+antialias, mask
    nearest), void -> ``ignore_to`` (kept as is when < 0), normalisation; records the crop box."""
    image = Image.fromarray(np.asarray(item["image"])).convert("RGB")
    image = hbird_jitter(image, rng, jitter, jitter_p)
    box = transforms.sample_crop_box(rng, (image.height, image.width), scale, ratio)
    image, mask, _ = transforms.crop_resize_flip(
        image, box, size, Image.Resampling.BILINEAR, mask=Image.fromarray(np.asarray(item["mask"], np.uint8))
    )
    mask = np.asarray(mask)
    if ignore_to >= 0:
        mask = np.where(mask == 255, np.uint8(ignore_to), mask)
    return {
        "image": transforms.normalize(image, mean, std),
        "mask": mask,
        "box": np.asarray(box, np.float32),
        "index": np.int32(item["index"]),
    }


# ----------------------------------------------------------------------------- driver
def build_memory(ctx: F.EvalContext, train, indices: np.ndarray, seed: int, patch: int) -> dict:
    """Host memory of one subset: unit features, uint16 counts, provenance (image, x, y)."""
    cfg, data, inp = ctx.config.hbird, ctx.config.data, ctx.config.input
    extractor = ctx.extractor(("patch",))
    g = cfg.size // patch
    n = len(indices)
    quota = g * g if cfg.memory_size <= 0 else min(g * g, cfg.memory_size // (n * cfg.epochs))
    if quota < 1:
        raise ValueError(f"hbird.memory_size={cfg.memory_size} leaves no patch per image for {n} images")
    item = functools.partial(
        memory_item,
        size=cfg.size,
        scale=cfg.crop_scale,
        ratio=cfg.crop_ratio,
        jitter=cfg.jitter,
        jitter_p=cfg.jitter_p,
        ignore_to=cfg.memory_ignore_to,
        mean=inp.mean,
        std=inp.std,
    )
    bs = extractor.batch_size(inp.batch_size)
    rows = n * cfg.epochs * quota
    feats = np.zeros((rows, 0), np.float32)
    counts = np.zeros((rows, data.num_classes), np.uint16)
    origin = np.zeros((rows, 3), np.float32)
    key = jax.random.key(seed)
    at = 0
    for epoch in range(cfg.epochs):
        for batch in F.batches(
            Subset(train, indices), item, bs, seed=seed * 1000 + epoch, workers=inp.workers
        ):
            m = int(batch["valid"].sum())
            keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, epoch), i))(
                jnp.asarray(batch["index"])
            )
            f, c, idx = jax.device_get(
                kernels.memory_rows(
                    extractor(batch["image"])["patch"],
                    extractor.to_device(batch["mask"]),
                    keys,
                    patch,
                    data.num_classes,
                    quota,
                )
            )
            if feats.shape[1] == 0:
                feats = np.zeros((rows, f.shape[-1]), np.float32)
            sl = slice(at, at + m * quota)
            feats[sl] = f[:m].reshape(-1, f.shape[-1])
            counts[sl] = c[:m].reshape(-1, data.num_classes)
            centres = transforms.patch_centers(batch["box"][:m], np.zeros(m, bool), g)  # (m, g², 2)
            picked = np.take_along_axis(centres, idx[:m, :, None], axis=1).reshape(-1, 2)
            origin[sl] = np.concatenate([np.repeat(batch["index"][:m], quota)[:, None], picked], 1)
            at += m * quota
    return {"features": feats, "counts": counts, "origin": origin, "quota": quota}


def query(ctx: F.EvalContext, memory: dict, val: dict, patch: int, n_keep: int):
    """Confusion matrix of the val split against one memory, kept predictions, neighbours of
    the first image's queries."""
    cfg, data = ctx.config.hbird, ctx.config.data
    mesh, n_dev = ctx.mesh, ctx.mesh.shape["data"]
    rows = len(memory["counts"])
    chunk = -(-min(cfg.chunk_size, rows) // 32) * 32  # the chunk ops.knn will use
    pad = -rows % (chunk * n_dev)
    mem = np.concatenate([memory["features"], np.zeros((pad, memory["features"].shape[1]), np.float32)])
    mem = jax.device_put(jnp.asarray(mem, cfg.memory_dtype), NamedSharding(mesh, P("data", None)))
    counts = jax.device_put(memory["counts"], NamedSharding(mesh, P()))
    extractor = ctx.extractor(("patch",))
    bs = extractor.batch_size(cfg.query_batch_size)
    acc = metrics.ConfusionAccumulator(data.num_classes, ignore_index=data.ignore_index)
    kept, first_idx = [], None
    for start in range(0, len(val["labels"]), bs):
        m = len(val["labels"][start : start + bs])
        batch = F.pad_batch(
            {
                "f": val["patch"][start : start + bs],
                "y": val["labels"][start : start + bs],
                "valid": np.ones(m, bool),
            },
            bs,
        )
        q = jnp.asarray(batch["f"]).reshape(-1, batch["f"].shape[-1])
        sims, idx = knn(q, mem, cfg.k, chunk, metric="dot", mesh=mesh, num_valid=rows)
        cm, pred = kernels.aggregate(
            sims,
            idx,
            jnp.maximum(jnp.linalg.norm(q, axis=-1), 1e-12),
            counts,
            extractor.to_device(batch["y"]),
            extractor.to_device(batch["valid"]),
            patch,
            data.num_classes,
            data.ignore_index,
            cfg.temperature,
        )
        acc.add(cm)
        if start < n_keep:
            kept.append(jax.device_get(pred)[: min(m, n_keep - start)])
        if first_idx is None:
            first_idx = np.asarray(jax.device_get(idx)).reshape(bs, -1, cfg.k)[0]
    return acc.cm, (np.concatenate(kept) if kept else np.zeros((0,))), first_idx


def run(ctx: F.EvalContext) -> dict:
    """Hummingbird retrieval for every fraction (and seed) of ``hbird`` (§1)."""
    cfg, data = ctx.config.hbird, ctx.config.data
    train = ctx.source(data.train_split, data.limit_train)
    patch = ctx.extractor(("patch",)).patch_size(cfg.size)
    val = ctx.dense(data.val_split, size=cfg.size, label_size=None, limit=data.limit_val)
    fg = [c for c in range(data.num_classes) if c not in data.background and c != data.ignore_index]
    file_sets = subsets.resolve_file_sets(cfg.file_sets, data.name, train)
    presence = None if file_sets else subsets.class_presence(train, data.num_classes)
    runs, shown = {}, None
    for seed in cfg.seeds:
        chosen = (
            subsets.file_set_subsets(file_sets, train, cfg.fractions, seed)
            if file_sets
            else subsets.balanced_subsets(presence, cfg.fractions, seed, fg)
        )
        for f in sorted(cfg.fractions):
            if f >= 1 and seed != cfg.seeds[0]:
                continue  # the full training set is evaluated once (first seed)
            indices = chosen[f] if f < 1 else np.arange(len(train))
            memory = build_memory(ctx, train, indices, seed, patch)
            cm, preds, neighbours = query(ctx, memory, val, patch, ctx.config.output.n_show)
            scores = report.supervised_scores(cm, data.ignore_index)
            runs.setdefault(_name(f), []).append(
                {
                    "seed": seed,
                    "n_images": len(indices),
                    "quota": memory["quota"],
                    "num_rows": len(memory["counts"]),
                    "reference": scores["miou_hungarian"],
                    "corrected": scores["miou_corrected"],
                    "identity_all": scores["miou"],
                }
            )
            if f >= 1 or shown is None:
                shown = (preds, neighbours, memory["origin"])
    summary = {}
    for name, entries in runs.items():
        for metric in ("reference", "corrected"):
            summary[f"{name}_{metric}"] = float(np.mean([e[metric] for e in entries]))
    if ctx.workdir and ctx.config.output.n_show:
        figures.save_pngs(ctx, val, train, shown, patch)
    return {
        "summary": summary,
        "runs": runs,
        "n_val": len(val["labels"]),
        "k": cfg.k,
        "subsets": file_sets or "class-balanced draws (dense_jax.data.lists)",
        "metric_definitions": {
            "reference": "hbird: Hungarian-matched, mean IoU over all C classes (ADE: /151)",
            "corrected": "identity mapping, mean over present classes, ignored class excluded",
        },
    }


def _name(fraction: float) -> str:
    return "full" if fraction >= 1 else f"1/{int(round(1 / fraction))}"
