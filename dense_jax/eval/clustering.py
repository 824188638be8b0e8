"""Unsupervised segmentation by K-means of frozen val tokens (evaluation.md §3a).

Leopart/NeCo ``sup_overcluster.py``: the last-block tokens of every val image at S = 448 are
standardised per dimension (population std), reduced to 50 dims by PCA (fitted on at most
1000·D random rows, no whitening), then clustered with K-means for seeds 0..4 (faiss settings:
random-sample init, 100 iterations, best of 5 restarts, trained on at most 256·K random rows,
then every token assigned to its nearest centroid). Cluster ids are nearest-upsampled from g×g
to 100×100 and compared with the GT resized nearest 448 -> 100 (GT 255 dropped):
K = #classes uses Hungarian matching, any other K the greedy many-to-one assignment by
precision (= majority vote; ``kmeans.many_to_one="iou"`` for COMUS's code). mIoU = mean over
all C, averaged over the seeds. The protocol is transductive (val only), as the reference.

``kmeans.max_points_per_centroid=0`` trains on every token (§9 fix);
``kmeans.resolution="pixels"`` is the CrOC variant (§3a): the PCA features are upsampled
bilinearly to 100×100 per image before K-means (scaler and PCA fitted on the tokens).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dense_jax.eval import features as F
from dense_jax.eval import metrics, report
from dense_jax.ops.kmeans import kmeans
from dense_jax.ops.knn import knn
from dense_jax.ops.resize import bilinear_upsample, nearest_resize

_ASSIGN_BLOCK = 1 << 16  # query rows per nearest-centroid search


def standardize(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std per column, population std, zero std -> 1 (sklearn StandardScaler)."""
    x = np.asarray(x, np.float32)
    mean = x.mean(0, dtype=np.float64)
    std = x.std(0, dtype=np.float64)
    std[std == 0] = 1.0
    return ((x - mean) / std).astype(np.float32)


def pca(x: np.ndarray, dim: int, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """Projection of the rows of ``x`` on the top-``dim`` principal axes (faiss PCAMatrix:
    fitted on at most ``max_rows`` random rows, centred with their mean, no whitening)."""
    if x.shape[1] <= dim:
        return x - x.mean(0)
    sample = x[rng.choice(len(x), max_rows, replace=False)] if len(x) > max_rows else x
    mean = sample.mean(0, dtype=np.float64)
    centred = sample - mean
    cov = centred.T @ centred / len(sample)
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    components = vecs[:, ::-1][:, :dim].astype(np.float32)
    return (x - mean.astype(np.float32)) @ components


def reduce(tokens: np.ndarray, pca_dim: int, rows_per_dim: int, seed: int) -> np.ndarray:
    """Standardise + PCA of (..., D) tokens -> (..., pca_dim) (Leopart ``normalize_and_transform``)."""
    flat = tokens.reshape(-1, tokens.shape[-1])
    z = pca(standardize(flat), pca_dim, rows_per_dim * flat.shape[1], np.random.default_rng(seed))
    return z.reshape(tokens.shape[:-1] + (z.shape[-1],))


def assign(x: np.ndarray, centroids, spherical: bool = False) -> np.ndarray:
    """Nearest centroid of every row (ties to the lower id) by an exact k = 1 search
    (``ops.knn``) in blocks of rows: squared L2 as argmax <[x, 1], [c, -|c|²/2]>, or the
    inner product with unit centroids for spherical K-means (faiss ``IndexFlatIP``)."""
    c = jnp.asarray(centroids, jnp.float32)
    if not spherical:
        c = jnp.concatenate([c, -0.5 * jnp.sum(c * c, -1, keepdims=True)], axis=1)
    out = []
    for start in range(0, len(x), _ASSIGN_BLOCK):
        q = np.asarray(x[start : start + _ASSIGN_BLOCK], np.float32)
        if not spherical:
            q = np.concatenate([q, np.ones((len(q), 1), np.float32)], axis=1)
        out.append(np.asarray(jax.device_get(knn(q, c, 1, metric="dot")[1][:, 0])))
    return np.concatenate(out)


def cluster(x: np.ndarray, k: int, seed: int, cfg, spherical: bool = False) -> np.ndarray:
    """faiss-style K-means of the rows of ``x``: train on <= max_points_per_centroid·k random
    rows (all when 0), then label every row with its nearest centroid."""
    train = x
    limit = cfg.max_points_per_centroid * k
    if limit and len(x) > limit:
        train = x[np.random.default_rng(seed).choice(len(x), limit, replace=False)]
    result = kmeans(
        train, k, n_iter=cfg.n_iter, n_init=cfg.n_init, init=cfg.init, seed=seed, spherical=spherical
    )
    return assign(x, result.centroids, spherical)


def mapping_for(cm: np.ndarray, many_to_one: str) -> np.ndarray:
    """Hungarian when #clusters == #classes, else the greedy many-to-one assignment (§3a)."""
    if cm.shape[0] == cm.shape[1]:
        return metrics.hungarian_match(cm)
    return metrics.majority_match(cm, score=many_to_one)


def run(ctx: F.EvalContext) -> dict:
    """K-means (K in ``kmeans.ks``, ``kmeans.seeds`` seeds) of the val tokens (§3a)."""
    cfg, data, inp = ctx.config.kmeans, ctx.config.data, ctx.config.input
    if cfg.resolution not in ("tokens", "pixels"):
        raise ValueError(f"unknown kmeans.resolution {cfg.resolution!r}; use tokens or pixels")
    val = ctx.dense(data.val_split, size=inp.size, label_size=cfg.label_size, limit=data.limit_val)
    labels, n, size = val["labels"], len(val["labels"]), cfg.label_size
    z = reduce(val["patch"], cfg.pca_dim, cfg.pca_rows_per_dim, ctx.config.seed)
    if cfg.resolution == "pixels":
        z = np.concatenate(
            [
                np.asarray(jax.device_get(bilinear_upsample(jnp.asarray(z[i : i + 16]), size)))
                for i in range(0, n, 16)
            ]
        )
    grid = z.shape[1:3]
    z = z.reshape(-1, z.shape[-1])

    per_k, summary, shown = {}, {}, {}
    for k in cfg.ks:
        scores = []
        for seed in range(cfg.seeds):
            ids = cluster(z, k, seed, cfg).reshape((n,) + grid)
            if cfg.resolution == "tokens":
                ids = nearest_resize(ids, size)
            acc = metrics.ConfusionAccumulator(data.num_classes, k, ignore_index=data.ignore_index)
            acc.update(ids, labels)
            mapping = mapping_for(acc.cm, cfg.many_to_one)
            scores.append(metrics.miou_from_confusion(acc.cm, mapping)["miou"])
            if seed == 0:
                shown[k] = metrics.remap(ids[: ctx.config.output.n_show], mapping)
        per_k[str(k)] = {
            "miou_per_seed": scores,
            "miou_mean": float(np.mean(scores)),
            "miou_std": float(np.std(scores)),
            "matching": "hungarian" if k == data.num_classes else f"many-to-one ({cfg.many_to_one})",
        }
        summary[f"k{k}"] = float(np.mean(scores))
    if ctx.workdir and ctx.config.output.n_show:
        rows = [
            [img, gt] + [shown[k][i] for k in cfg.ks] for i, (img, gt) in enumerate(zip(val["show"], labels))
        ]
        report.save_panels(
            ctx.path("kmeans_clusters.png"),
            rows,
            titles=("image", "ground truth") + tuple(f"K={k}" for k in cfg.ks),
        )
    return {
        "summary": summary,
        "per_k": per_k,
        "n_val": n,
        "pca_dim": int(z.shape[-1]),
        "resolution": cfg.resolution,
    }
