"""The COMUS pipeline, stage by stage (comus.md §1), each stage cached in the workdir.

    python -m dense_jax.main --config=configs/comus_voc.py:demo --workdir=workdirs/comus_demo

1. ``saliency``: a binary mask per image of the discovery split (`saliency`), at its original
   size; ``saliency.json`` lists each image's area, proposal box and the images without a mask.
2. ``discovery``: the CLS feature of every proposal's crop, spectral clustering, the filter
   (`discovery`); ``discovery.npz``.
3. ``round0``: pseudo-masks (cluster + 1 on the saliency) of the kept images as palette PNGs in
   ``pseudo_masks/round0/``, ``round0.json`` (kept positions).
4. ``round<r>`` for r = 1..R: a fresh segmentation network trained by the trainer on the previous
   round's masks of ``self_train.splits[r-1]`` (``round<r>/``, the trainer's own checkpoints);
   for r < R its argmax labels of every image of the next split go to ``pseudo_masks/round<r>/``.
5. ``results.json``: iteration 0 scored transductively on the discovery split (prediction 0 for
   dropped images), every round's network on ``data.val_split``; PNG panels of the clusters and
   of the final predictions.

A stage whose output file exists is skipped, so a re-run resumes at the first missing stage (a
half-trained round resumes from its checkpoint). Outputs are written atomically (temporary
file, then rename). The trainer is handed in (``fit``, as the CLIs do for the linear probe).
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import jax
import numpy as np
from tqdm import tqdm

from dense_jax import models
from dense_jax.core.sharding import make_mesh
from dense_jax.data.mask_folder import MaskFolder, read_label_png, write_label_png
from dense_jax.eval import report
from dense_jax.eval.features import Extractor, open_source
from dense_jax.methods import segmentation
from dense_jax.methods.comus import discovery, saliency, scoring, self_train
from dense_jax.ops.resize import nearest_resize


# ----------------------------------------------------------------------------- cache helpers
def _write_json(path: str, value) -> None:
    tmp = f"{path}.tmp"
    report.write_json(tmp, value)
    os.replace(tmp, path)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def backbone(config):
    """(apply_fn, params) of ``config.model`` from ``config.init_from`` (random init when empty)."""
    overrides = {k: v for k, v in config.model.to_dict().items() if k != "variant"}
    path = os.path.expanduser(config.init_from) if config.init_from else None
    if path and not os.path.exists(path):
        raise FileNotFoundError(
            f"backbone weights {path} not found (config.init_from). {config.init_from_hint}"
        )
    model, params = models.load(config.model.variant, path, seed=config.seed, **overrides)
    return (lambda p, x: model.apply({"params": p}, x)), params


# ----------------------------------------------------------------------------- stages
def saliency_stage(config, workdir: str, source, extract: Callable, log) -> dict:
    """Masks of every discovery image (saved under ``saliency/`` unless read from a folder),
    their areas and proposal boxes."""
    cfg = config.saliency
    path = os.path.join(workdir, "saliency.json")
    if os.path.exists(path):
        return _read_json(path)
    if cfg.type not in saliency.TYPES:
        raise ValueError(f"unknown saliency.type {cfg.type!r}; use {', '.join(saliency.TYPES)}")
    folder = saliency_folder(config, workdir)
    ids, boxes, areas, missing = [], [], [], []
    if cfg.type == "dir":
        missing = saliency.missing_masks(
            folder, (source[i]["id"] for i in range(len(source))), cfg.max_missing_fraction
        )
        if missing:
            log(f"saliency: {len(missing)} images have no mask in {folder} and are skipped: {missing[:10]}")
        skip = set(missing)
        for i in tqdm(range(len(source)), desc="saliency masks", unit="img"):
            item = source[i]
            ids.append(item["id"])
            if item["id"] in skip:
                areas.append(0)
                boxes.append(None)
                continue
            mask = saliency.read_mask_png(os.path.join(folder, f"{item['id']}.png"), item["image"].shape[:2])
            areas.append(int(mask.sum()))
            boxes.append(discovery.proposal(mask, cfg.min_area))
    else:
        predict = saliency.load_checkpoint_model(cfg) if cfg.type == "checkpoint" else None
        bar = tqdm(total=len(source), desc="saliency", unit="img")
        for chunk in _chunks(len(source), cfg.batch_size):
            items = [source[i] for i in chunk]
            images = [it["image"] for it in items]
            masks = saliency.checkpoint_masks(predict, images, cfg) if predict else extract(images)
            for it, mask in zip(items, masks):
                write_label_png(os.path.join(folder, f"{it['id']}.png"), mask.astype(np.uint8) * 255)
                ids.append(it["id"])
                areas.append(int(mask.sum()))
                boxes.append(discovery.proposal(mask, cfg.min_area))
            bar.update(len(items))
        bar.close()
    result = {"ids": ids, "areas": areas, "boxes": boxes, "missing": missing, "folder": folder}
    _write_json(path, result)
    return _read_json(path)  # the cached form (lists), the same on a re-run


def saliency_folder(config, workdir: str) -> str:
    return (
        os.path.expanduser(config.saliency.dir)
        if config.saliency.type == "dir"
        else os.path.join(workdir, "saliency")
    )


def load_saliency(folder: str, key: str) -> np.ndarray:
    """A cached or user saliency mask as bool."""
    return saliency.read_mask_png(os.path.join(folder, f"{key}.png"))


def discovery_stage(config, workdir: str, source, sal: dict, extractor) -> dict:
    """CLS features of the proposals, clusters, distances and the kept set (``discovery.npz``)."""
    cfg = config.discovery
    path = os.path.join(workdir, "discovery.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    positions = np.asarray([i for i, box in enumerate(sal["boxes"]) if box is not None], np.int64)
    if len(positions) <= cfg.n_clusters:
        raise ValueError(
            f"only {len(positions)} images have a proposal (saliency area > {config.saliency.min_area}), "
            f"not enough for {cfg.n_clusters} clusters"
        )
    bar = tqdm(total=len(positions), desc="crop features", unit="crop")
    feats = []
    for chunk in _chunks(len(positions), cfg.batch_size):
        images = [source[int(positions[i])]["image"] for i in chunk]
        boxes = [sal["boxes"][positions[i]] for i in chunk]
        feats.append(discovery.crop_features(extractor, images, boxes, cfg.crop_size, cfg.batch_size, bar))
    bar.close()
    feats = np.concatenate(feats)
    if cfg.clustering == "spectral":
        labels, emb, centers = discovery.spectral_cluster(
            feats, cfg.n_clusters, cfg.n_neighbors, cfg.n_init, config.seed, cfg.eigen_solver
        )
    elif cfg.clustering == "kmeans":
        labels, emb, centers = discovery.kmeans_cluster(feats, cfg.n_clusters, cfg.n_init, config.seed)
    else:
        raise ValueError(f"unknown discovery.clustering {cfg.clustering!r}; use spectral or kmeans")
    distances = discovery.cosine_distance(emb, centers, labels)
    keep = discovery.keep_core(distances, labels, cfg.core_size, cfg.filter_rule)
    result = dict(
        positions=positions, features=feats, labels=labels, embedding=emb, distances=distances, keep=keep
    )
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **result)
    os.replace(tmp, path)
    return result


def pseudo_mask_stage(workdir: str, source, sal: dict, disc: dict) -> dict:
    """Round-0 pseudo-masks of the kept images (``pseudo_masks/round0``, ``round0.json``)."""
    path = os.path.join(workdir, "round0.json")
    if os.path.exists(path):
        return _read_json(path)
    folder = os.path.join(workdir, "pseudo_masks", "round0")
    kept = disc["positions"][disc["keep"]]
    labels = disc["labels"][disc["keep"]]
    for pos, label in tqdm(list(zip(kept, labels)), desc="pseudo-masks", unit="img"):
        key = sal["ids"][pos]
        write_label_png(
            os.path.join(folder, f"{key}.png"),
            discovery.pseudo_mask(load_saliency(sal["folder"], key), int(label)),
        )
    result = {"positions": kept.tolist(), "labels": labels.tolist(), "folder": folder}
    _write_json(path, result)
    return _read_json(path)  # the cached form (lists), the same on a re-run


def label_stage(workdir: str, r: int, source, labeller, state) -> dict:
    """Round ``r``'s network labels every image of the next split (``pseudo_masks/round<r>``)."""
    path = os.path.join(workdir, f"round{r}.json")
    if os.path.exists(path):
        return _read_json(path)
    folder = os.path.join(workdir, "pseudo_masks", f"round{r}")
    bar = tqdm(total=len(source), desc=f"round {r} labels", unit="img")
    for chunk in _chunks(len(source), labeller.batch_size):
        items = [source[i] for i in chunk]
        for it, pred in zip(items, labeller(state, [it["image"] for it in items])):
            write_label_png(os.path.join(folder, f"{it['id']}.png"), pred)
        bar.update(len(items))
    bar.close()
    result = {"positions": list(range(len(source))), "folder": folder}
    _write_json(path, result)
    return _read_json(path)  # the cached form (lists), the same on a re-run


# ----------------------------------------------------------------------------- evaluation
def evaluate_pseudo_masks(config, source, sal: dict, round0: dict, n_show: int) -> tuple[dict, list]:
    """Iteration 0, transductive on the discovery split (§7): the pseudo-mask of a kept image,
    all 0 for an image that was filtered out or had no proposal; also the saliency's mean
    per-image foreground IoU (Table 6's measure) over the images with a mask."""
    scorer = scoring.Scorer(config.data, config.discovery.n_clusters + 1)
    kept, missing = set(round0["positions"]), set(sal["missing"])
    shown, fg_ious = [], []
    for i in tqdm(range(len(source)), desc="score iteration 0", unit="img"):
        item = source[i]
        if item["id"] not in missing:
            salient = load_saliency(sal["folder"], item["id"])
            fg_ious.append(scoring.foreground_iou(salient, scoring.comus_gt(item["mask"], config.data)))
        if i in kept:
            pred = read_label_png(os.path.join(round0["folder"], f"{item['id']}.png"))
        else:
            pred = np.zeros(item["mask"].shape, np.uint8)
        scorer.add(pred, item["mask"])
        if len(shown) < n_show:
            shown.append((item["image"], scoring.comus_gt(item["mask"], config.data), pred))
    return {**scorer.result(config.evaluation.match), "saliency_fg_iou": float(np.mean(fg_ious))}, shown


def evaluate_network(config, source, labeller, state, n_show: int, desc: str) -> tuple[dict, list]:
    """A round's network on ``source`` (val): squash, argmax, nearest back to the GT size (§7); GT
    with fewer than ``evaluation.min_labelled_pixels`` foreground pixels is not scored."""
    scorer = scoring.Scorer(
        config.data, config.discovery.n_clusters + 1, config.evaluation.min_labelled_pixels
    )
    shown = []
    for chunk in tqdm(list(_chunks(len(source), labeller.batch_size)), desc=desc, unit="batch"):
        items = [source[i] for i in chunk]
        for it, pred in zip(items, labeller(state, [it["image"] for it in items])):
            scorer.add(pred, it["mask"])
            if len(shown) < n_show:
                shown.append((it["image"], scoring.comus_gt(it["mask"], config.data), pred))
    return scorer.result(config.evaluation.match), shown


def kmeans_baseline(config, source, extractor) -> dict:
    """K-means (K + 1 clusters) of the backbone's val patch tokens (standardised, PCA), ids
    nearest-resized to each GT, scored like COMUS: the baseline the demo must beat."""
    from dense_jax.eval import clustering
    from dense_jax.eval.features import extract

    cfg, size = config.evaluation.kmeans, config.self_train.input_size
    tokens = extract(extractor, source, size=size, label_size=None, batch_size=config.self_train.batch_size)[
        "patch"
    ]
    z = clustering.reduce(tokens, cfg.pca_dim, 1000, config.seed)
    ids = clustering.cluster(z.reshape(-1, z.shape[-1]), config.discovery.n_clusters + 1, config.seed, cfg)
    ids = ids.reshape(tokens.shape[:3])
    scorer = scoring.Scorer(config.data, config.discovery.n_clusters + 1)
    for i in range(len(source)):
        mask = source[i]["mask"]
        scorer.add(np.asarray(nearest_resize(ids[i], mask.shape)), mask)
    return scorer.result(config.evaluation.match)


def _panels(path: str, shown: list, mapping, title: str) -> None:
    rows = [[image, gt, np.asarray(mapping)[pred]] for image, gt, pred in shown]
    if rows:
        report.save_panels(path, rows, titles=("image", "ground truth", title))


def _cluster_panels(path: str, source, round0: dict, n_clusters: int, per_cluster: int = 4) -> None:
    """One row per cluster: up to ``per_cluster`` kept images with their pseudo-masks (Fig. 3 style)."""
    rows = []
    for c in range(n_clusters):
        members = [p for p, label in zip(round0["positions"], round0["labels"]) if label == c][:per_cluster]
        row = []
        for p in members:
            item = source[p]
            row += [item["image"], read_label_png(os.path.join(round0["folder"], f"{item['id']}.png"))]
        if row:
            rows.append(row)
    if rows:
        report.save_panels(path, rows, size=(96, 96))


def _summary(name: str, result: dict) -> dict:
    keys = ("miou", "pixel_accuracy", "saliency_fg_iou")
    return {f"{name}_{k}": result[k] for k in keys if k in result}


def discover(config, workdir: str, apply_fn, params, mesh, log: Callable[[str], None] = print):
    """Stages 1-3 (saliency, discovery, round-0 pseudo-masks) on ``self_train.splits[0]``:
    returns (the split's source, saliency.json, discovery.npz, round0.json) contents."""
    st = config.self_train
    source = open_source(config.data, st.splits[0], st.limits[0])
    with jax.set_mesh(mesh):
        kinds = ("attn_heads",) if config.saliency.method == "dinoseg" else ("keys",)
        sal_extractor = Extractor(apply_fn, params, mesh, kinds)
        sal = saliency_stage(
            config,
            workdir,
            source,
            lambda ims: saliency.attention_masks(sal_extractor, ims, config.saliency),
            log,
        )
        disc = discovery_stage(config, workdir, source, sal, Extractor(apply_fn, params, mesh, ("cls",)))
    round0 = pseudo_mask_stage(workdir, source, sal, disc)
    n_prop = int(sum(b is not None for b in sal["boxes"]))
    log(
        f"discovery: {len(sal['ids'])} images, {n_prop} proposals, "
        f"{len(round0['positions'])} kept after filtering"
    )
    return source, sal, disc, round0


# ----------------------------------------------------------------------------- the pipeline
class _Clock:
    """Wall seconds of each stage of this run (a cached stage takes about none)."""

    def __init__(self):
        self.times, self.last = {}, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = round(now - self.last, 1)
        self.last = now


def run(config, workdir: str, fit: Callable, log: Callable[[str], None] = print) -> dict:
    """Every stage in order (module docstring); returns and writes ``results.json``."""
    data, st, ev = config.data, config.self_train, config.evaluation
    rounds = len(st.epochs)
    if not (len(st.splits) == len(st.limits) == rounds >= 1):
        raise ValueError(
            f"self_train.splits {tuple(st.splits)}, limits {tuple(st.limits)} and epochs "
            f"{tuple(st.epochs)} need one entry per round"
        )
    os.makedirs(workdir, exist_ok=True)
    mesh = make_mesh(config.mesh.shape)
    apply_fn, params = backbone(config)
    clock = _Clock()
    disc_source, sal, disc, round0 = discover(config, workdir, apply_fn, params, mesh, log)
    clock.lap("discovery (saliency, features, clustering, pseudo-masks)")
    n_prop = int(sum(b is not None for b in sal["boxes"]))
    results = {
        "n_images": len(sal["ids"]),
        "n_missing_saliency": len(sal["missing"]),
        "n_proposals": n_prop,
        "n_kept": len(round0["positions"]),
    }
    it0, shown = evaluate_pseudo_masks(config, disc_source, sal, round0, config.output.n_show)
    clock.lap("score iteration 0")
    results["iteration0"] = it0
    summary = _summary("iteration0", it0)
    log(f"iteration 0 (pseudo-masks, {st.splits[0]}): mIoU {100 * it0['miou']:.2f}")
    _cluster_panels(os.path.join(workdir, "clusters.png"), disc_source, round0, config.discovery.n_clusters)
    _panels(os.path.join(workdir, "iteration0.png"), shown, it0["mapping"], "pseudo-masks")

    val = open_source(data, data.val_split, data.limit_val)
    previous = round0
    for r in range(1, rounds + 1):
        train_source = MaskFolder(
            open_source(data, st.splits[r - 1], st.limits[r - 1]), previous["folder"], previous["positions"]
        )
        seg_config = self_train.segmentation_config(config, r)
        log(f"round {r}: training on {len(train_source)} images of {st.splits[r - 1]}")
        state = fit(seg_config, segmentation, train_source, os.path.join(workdir, f"round{r}"), params)
        clock.lap(f"train round {r}")
        labeller = self_train.make_labeller(seg_config, mesh, st.batch_size)
        result, shown = evaluate_network(
            config, val, labeller, state, config.output.n_show, f"score round {r}"
        )
        clock.lap(f"score round {r}")
        results[f"iteration{r}"] = result
        log(f"iteration {r} ({data.val_split}): mIoU {100 * result['miou']:.2f}")
        summary.update(_summary(f"iteration{r}", result))
        _panels(os.path.join(workdir, f"iteration{r}.png"), shown, result["mapping"], f"round {r}")
        if r < rounds:
            next_source = open_source(data, st.splits[r], st.limits[r])
            previous = label_stage(workdir, r, next_source, labeller, state)
            clock.lap(f"round {r} labels")
    if ev.kmeans_baseline:
        with jax.set_mesh(mesh):
            results["kmeans_patch_tokens"] = kmeans_baseline(
                config, val, Extractor(apply_fn, params, mesh, ("patch",))
            )
        summary.update(_summary("kmeans_patch_tokens", results["kmeans_patch_tokens"]))
        clock.lap("k-means baseline")
    results["summary"] = summary
    results["wall_time_s"] = clock.times
    _write_json(os.path.join(workdir, "results.json"), {"config": config.to_dict(), "results": results})
    for name, value in summary.items():
        log(f"{name}: {100 * value:.2f}")
    log(f"wall time per stage (s): {clock.times}")
    return results
