"""Dense nearest-neighbour retrieval: the Hummingbird ("hbird") in-context protocol (evaluation.md §1).

Memory (per training subset and seed; E augmentation epochs over its N images, no shuffle):
colour jitter (brightness, contrast, saturation, hue 0.1, each applied with p = 0.5) and a
paired RandomResizedCrop(S, scale (0.5, 2), ratio (3/4, 4/3)); VOC's void 255 becomes class 0
(``hbird.memory_ignore_to``; -1 drops ignore pixels instead); per patch the soft label is the
histogram of its P² pixel classes / P²; ``q = min(g², ⌊M / (N·E)⌋)`` patches per image are kept,
preferring patches of classes that are rare in the image (score = Σ over the classes present in
the patch of the number of patches containing that class, × U(0, 1), keep the q smallest);
features are stored L2-normalised. Labels are stored as uint16 counts (exact), features in
``hbird.memory_dtype``.

Query: val images squashed to S×S, raw (un-normalised) patch features, exact k-NN by dot product
(``ops.knn``, chunked, memory rows sharded over the mesh), weights softmax(cos / 0.02) over the
k = 30 neighbours (cos = score / |f|, exact because memory rows are unit norm), soft labels
aggregated, bilinearly upsampled to S×S, argmax; one confusion matrix over val at S×S.

Reported per fraction (mean over the seeds when f < 1; the full set once), clearly labelled:
- ``reference``: hbird's number: Hungarian matching, mean over all C classes (ADE: /151);
- ``corrected``: identity mapping (the predictions are supervised), mean over the classes
  present, the ignored class excluded (§9).
Subsets: hbird's shipped lists (``hbird.file_sets`` = e.g. ``open-hummingbird-eval/file_sets/voc``,
files ``1_div_<d>/*_<d>_<seed>.txt``), else NeCo's rule: round(N·f / C_fg) distinct images per
foreground class, nested over fractions for a seed.
"""
from __future__ import annotations

import functools
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from PIL import Image, ImageDraw

from dense_jax.data import transforms
from dense_jax.eval import features as F
from dense_jax.eval import metrics, report
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


def memory_item(item: dict, rng: np.random.Generator, size: int, scale, ratio, jitter: float,
                jitter_p: float, ignore_to: int, mean, std) -> dict:
    """One augmented memory view (§1): jitter, paired RRC (image bilinear+antialias, mask
    nearest), void -> ``ignore_to`` (kept as is when < 0), normalisation; records the crop box."""
    image = Image.fromarray(np.asarray(item["image"])).convert("RGB")
    image = hbird_jitter(image, rng, jitter, jitter_p)
    box = transforms.sample_crop_box(rng, (image.height, image.width), scale, ratio)
    image = image.crop(box).resize((size, size), Image.Resampling.BILINEAR)
    mask = np.asarray(Image.fromarray(np.asarray(item["mask"], np.uint8)).crop(box)
                      .resize((size, size), Image.Resampling.NEAREST))
    if ignore_to >= 0:
        mask = np.where(mask == 255, np.uint8(ignore_to), mask)
    x = (np.asarray(image, np.float32) / 255.0 - np.float32(mean)) / np.float32(std)
    return {"image": x, "mask": mask, "box": np.asarray(box, np.float32),
            "index": np.int32(item["index"])}


class _Indexed:
    """A source whose items also carry their position in ``base`` (memory provenance)."""

    def __init__(self, base, indices):
        self.base, self.indices = base, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return {**self.base[int(self.indices[i])], "index": int(self.indices[i])}


# ----------------------------------------------------------------------------- device parts
def patch_counts(mask: jax.Array, patch: int, num_classes: int) -> jax.Array:
    """(B, S, S) labels -> (B, g², C) int32 pixel counts per patch (labels >= C not counted)."""
    b, s, _ = mask.shape
    g = s // patch
    m = mask.astype(jnp.int32)
    rows = (jnp.arange(s) // patch)[:, None] * g + (jnp.arange(s) // patch)[None, :]
    keep = m < num_classes
    flat = jnp.where(keep, rows[None] * num_classes + m, 0).reshape(b, -1)
    counts = jnp.zeros((b, g * g * num_classes), jnp.int32)
    counts = jax.vmap(lambda c, f, k: c.at[f].add(k))(counts, flat, keep.reshape(b, -1).astype(jnp.int32))
    return counts.reshape(b, g * g, num_classes)


def sample_patches(counts: jax.Array, noise: jax.Array, quota: int) -> jax.Array:
    """Indices (B, quota) of the kept patches (§1): score[p] = Σ_{c in p} #patches with c,
    × U(0, 1) noise, keep the ``quota`` smallest; label-less patches score 1e6."""
    present = counts > 0
    freq = present.sum(1, keepdims=True)
    score = jnp.sum(jnp.where(present, freq, 0), -1).astype(jnp.float32)
    score = jnp.where(present.any(-1), score * noise, 1e6)
    return jax.lax.top_k(-score, quota)[1]


@functools.partial(jax.jit, static_argnames=("patch", "num_classes", "quota"))
def memory_rows(feats, mask, keys, patch: int, num_classes: int, quota: int):
    """Kept rows of one memory batch: unit features (B, q, D), uint16 counts (B, q, C), patch
    indices (B, q). ``keys``: one PRNG key per image (seed, epoch, image index)."""
    b, g, _, d = feats.shape
    counts = patch_counts(mask, patch, num_classes)
    flat = feats.reshape(b, g * g, d)
    if quota < g * g:
        noise = jax.vmap(lambda k: jax.random.uniform(k, (g * g,)))(keys)
        idx = sample_patches(counts, noise, quota)
    else:
        idx = jnp.broadcast_to(jnp.arange(g * g), (b, g * g))
    sel = jnp.take_along_axis(flat, idx[..., None], axis=1)
    sel = sel / jnp.maximum(jnp.linalg.norm(sel, axis=-1, keepdims=True), 1e-12)
    return sel, jnp.take_along_axis(counts, idx[..., None], axis=1).astype(jnp.uint16), idx


@functools.partial(jax.jit, static_argnames=("patch", "num_classes", "ignore_index", "temperature"))
def aggregate(sims, idx, qnorm, mem_counts, gt, valid, patch: int, num_classes: int,
              ignore_index: int, temperature: float):
    """Soft-label prediction of a query batch and its (C, C) confusion matrix (§1)."""
    b, s, _ = gt.shape
    g = s // patch
    w = jax.nn.softmax(sims / qnorm[:, None] / temperature, axis=-1)
    labels = mem_counts[idx].astype(jnp.float32) / (patch * patch)
    yhat = jnp.einsum("qk,qkc->qc", w, labels).reshape(b, g, g, num_classes)
    pred = jnp.argmax(F.bilinear_upsample(yhat, s), axis=-1)
    return metrics.confusion_matrix(pred, gt, num_classes, valid=valid, ignore_index=ignore_index), pred


# ----------------------------------------------------------------------------- subsets
def class_presence(source, num_classes: int) -> list[np.ndarray]:
    """Classes present in each item's mask (values >= C ignored)."""
    out = []
    for i in range(len(source)):
        present = np.unique(np.asarray(source[i]["mask"]))
        out.append(present[present < num_classes])
    return out


def balanced_subsets(presence: list[np.ndarray], fractions, seed: int, fg_classes) -> dict:
    """NeCo's rule (§1): for each fraction f < 1, round(N·f / C_fg) distinct images per
    foreground class, uniformly at random; nested over increasing f for one seed."""
    n = len(presence)
    rng = np.random.default_rng(seed)
    pools = {c: [i for i in rng.permutation(n) if c in presence[i]] for c in fg_classes}
    pointers = {c: 0 for c in fg_classes}
    chosen, taken, per_class = [], set(), {c: 0 for c in fg_classes}
    out = {}
    for f in sorted(f for f in fractions if f < 1):
        target = int(round(n * f / len(fg_classes)))
        for c in fg_classes:
            while per_class[c] < target and pointers[c] < len(pools[c]):
                i = pools[c][pointers[c]]
                pointers[c] += 1
                if i not in taken:
                    taken.add(i)
                    chosen.append(i)
                    per_class[c] += 1
        out[f] = np.asarray(sorted(chosen), np.int64)
    return out


def file_set_subsets(root: str, source, fractions, seed: int) -> dict:
    """hbird's shipped lists ``<root>/1_div_<d>/*_<d>_<seed>.txt`` (one image id per line)."""
    ids = getattr(source, "ids", None) or [source[i]["id"] for i in range(len(source))]
    position = {str(x): i for i, x in enumerate(ids)}
    out = {}
    for f in (f for f in fractions if f < 1):
        d = int(round(1 / f))
        files = glob.glob(os.path.join(root, f"1_div_{d}", f"*_{d}_{seed}.txt"))
        if len(files) != 1:
            raise FileNotFoundError(f"expected one hbird file set 1_div_{d}/*_{d}_{seed}.txt under {root!r}")
        with open(files[0]) as fh:
            out[f] = np.asarray(sorted(position[line.strip()] for line in fh if line.strip()), np.int64)
    return out


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
    item = functools.partial(memory_item, size=cfg.size, scale=cfg.crop_scale, ratio=cfg.crop_ratio,
                             jitter=cfg.jitter, jitter_p=cfg.jitter_p, ignore_to=cfg.memory_ignore_to,
                             mean=inp.mean, std=inp.std)
    bs = extractor.batch_size(inp.batch_size)
    rows = n * cfg.epochs * quota
    feats = np.zeros((rows, 0), np.float32)
    counts = np.zeros((rows, data.num_classes), np.uint16)
    origin = np.zeros((rows, 3), np.float32)
    key = jax.random.key(seed)
    at = 0
    for epoch in range(cfg.epochs):
        for batch in F.batches(_Indexed(train, indices), item, bs, seed=seed * 1000 + epoch,
                               workers=inp.workers):
            m = int(batch["valid"].sum())
            keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, epoch), i))(
                jnp.asarray(batch["index"]))
            f, c, idx = jax.device_get(memory_rows(extractor(batch["image"])["patch"],
                                                   extractor.to_device(batch["mask"]), keys,
                                                   patch, data.num_classes, quota))
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
        m = len(val["labels"][start:start + bs])
        batch = F.pad_batch({"f": val["patch"][start:start + bs], "y": val["labels"][start:start + bs],
                             "valid": np.ones(m, bool)}, bs)
        q = jnp.asarray(batch["f"]).reshape(-1, batch["f"].shape[-1])
        sims, idx = knn(q, mem, cfg.k, chunk, metric="dot", mesh=mesh, num_valid=rows)
        cm, pred = aggregate(sims, idx, jnp.maximum(jnp.linalg.norm(q, axis=-1), 1e-12), counts,
                             extractor.to_device(batch["y"]), extractor.to_device(batch["valid"]),
                             patch, data.num_classes, data.ignore_index, cfg.temperature)
        acc.add(cm)
        if start < n_keep:
            kept.append(jax.device_get(pred)[:min(m, n_keep - start)])
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
    presence = None if cfg.file_sets else class_presence(train, data.num_classes)
    runs, shown = {}, None
    for seed in cfg.seeds:
        subsets = (file_set_subsets(cfg.file_sets, train, cfg.fractions, seed) if cfg.file_sets
                   else balanced_subsets(presence, cfg.fractions, seed, fg))
        for f in sorted(cfg.fractions):
            if f >= 1 and seed != cfg.seeds[0]:
                continue  # the full training set is evaluated once (first seed)
            indices = subsets[f] if f < 1 else np.arange(len(train))
            memory = build_memory(ctx, train, indices, seed, patch)
            cm, preds, neighbours = query(ctx, memory, val, patch, ctx.config.output.n_show)
            scores = report.supervised_scores(cm, data.ignore_index)
            runs.setdefault(_name(f), []).append({
                "seed": seed, "n_images": len(indices), "quota": memory["quota"],
                "num_rows": len(memory["counts"]), "reference": scores["miou_hungarian"],
                "corrected": scores["miou_corrected"], "identity_all": scores["miou"]})
            if f >= 1 or shown is None:
                shown = (preds, neighbours, memory["origin"])
    summary = {}
    for name, entries in runs.items():
        for metric in ("reference", "corrected"):
            summary[f"{name}_{metric}"] = float(np.mean([e[metric] for e in entries]))
    if ctx.workdir and ctx.config.output.n_show:
        _save_pngs(ctx, val, train, shown, patch)
    return {"summary": summary, "runs": runs, "n_val": len(val["labels"]), "k": cfg.k,
            "metric_definitions": {
                "reference": "hbird: Hungarian-matched, mean IoU over all C classes (ADE: /151)",
                "corrected": "identity mapping, mean over present classes, ignored class excluded"}}


def _name(fraction: float) -> str:
    return "full" if fraction >= 1 else f"1/{int(round(1 / fraction))}"


def _save_pngs(ctx: F.EvalContext, val: dict, train, shown, patch: int) -> None:
    preds, neighbours, origin = shown
    report.save_panels(ctx.path("hbird_predictions.png"),
                       [[img, gt, p] for img, gt, p in zip(val["show"], val["labels"], preds)],
                       titles=("image", "ground truth", "retrieval"))
    # Retrieval examples: 4 query patches of the first val image and their 5 nearest memory
    # patches, each drawn on its (un-augmented) source training image.
    size = ctx.config.hbird.size
    g = size // patch
    rows = []
    for r, c in ((g // 4, g // 4), (g // 4, 3 * g // 4), (3 * g // 4, g // 4), (3 * g // 4, 3 * g // 4)):
        row = [_boxed(val["show"][0], ((c + 0.5) * patch, (r + 0.5) * patch), patch)]
        for j in neighbours[r * g + c][:5]:
            image_index, x, y = origin[j]
            image = np.asarray(train[int(image_index)]["image"])
            scale = size / max(image.shape[:2])
            resized = np.asarray(Image.fromarray(image).resize(
                (int(image.shape[1] * scale), int(image.shape[0] * scale))))
            row.append(_boxed(resized, ((x + 0.5) * scale, (y + 0.5) * scale), patch))
        rows.append(row)
    report.save_panels(ctx.path("hbird_neighbours.png"), rows, titles=("query",) + ("neighbour",) * 5,
                       size=(size, size))


def _boxed(image: np.ndarray, centre, side: float) -> np.ndarray:
    img = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    x, y = centre
    ImageDraw.Draw(img).rectangle([x - side / 2, y - side / 2, x + side / 2, y + side / 2],
                                  outline=(255, 0, 0), width=2)
    return np.asarray(img)
