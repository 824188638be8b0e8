"""Cluster-based foreground extraction (CBFE) for fully unsupervised segmentation (evaluation.md §3c).

Leopart/NeCo ``fully_unsup_seg.py``: the "CBFE" number and, with ``cbfe.community.enabled``, the
community-detection ("+CD") number (step 5; dense_jax/eval/communities.py).

1. Attention foreground per image at g×g: last-block CLS attention averaged over heads
   (registers excluded), 7×7 Gaussian blur (σ = 0.6, reflect padding, torchvision), keep the
   top patches holding τ of the mass (ascending cumulative sum > 1 − τ; τ = 0.65 in the code,
   0.7 in the NeCo text: ``--config.cbfe.tau=0.7``), drop 8-connected components of ≤ 2 patches.
2. Tokens of train (VOC ``train``, 1464) + val (1449) at 448 are standardised and PCA'd to 50
   together; spherical K-means with K_fg = 200 (seed 0); ids nearest to 100×100.
3. prec[k] = mean over the images containing cluster k of |k ∩ attention fg| / |k|. On train,
   for every cut in [int(0.55 K), int(0.75 K)) the clusters ranked >= cut are foreground; the
   cut with the best mean per-image IoU against GT != background (255 counts as foreground:
   this step uses train GT) fixes the threshold = prec at that cut rounded to a multiple of 0.05.
   On val, prec is recomputed with val attention and clusters with prec >= threshold are fg.
4. CBFE number: the PCA features of the foreground pixels (nearest-upsampled to 100×100, i.e.
   each pixel carries its token's feature) of train + val are clustered with K = #foreground
   classes (20 on VOC; seeds 0..4); background pixels get label K; Hungarian (K+1) vs C on val
   (GT 255 dropped), averaged over the seeds.
5. CD number: the same fg-only clustering with K_cd clusters (seed 0) gives a map with
   background = K_cd on train + val; its co-occurrence graph is split by Infomap once per seed
   (``community.seeds``), the val map merged to the groups is scored by Hungarian (K+1) vs C,
   and mean ± std and best over the seeds are reported (the code reports mean ± std, the NeCo
   text "best of 10 seeds").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from dense_jax.eval import clustering, communities, metrics, report
from dense_jax.eval import features as F
from dense_jax.ops.kmeans import kmeans
from dense_jax.ops.resize import nearest_indices, nearest_resize


# ----------------------------------------------------------------------------- attention masks
def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """torchvision's 1-D Gaussian: exp(-x²/2σ²) on linspace(-(size-1)/2, (size-1)/2), sum 1."""
    x = np.linspace(-(size - 1) / 2, (size - 1) / 2, size)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def blur(maps: jax.Array, size: int, sigma: float) -> jax.Array:
    """Separable Gaussian blur of (N, h, w) maps with reflect padding (torchvision GaussianBlur)."""
    k = jnp.asarray(gaussian_kernel(size, sigma))
    r = size // 2
    x = jnp.pad(maps, ((0, 0), (r, r), (r, r)), mode="reflect")
    h, w = maps.shape[1:]
    x = sum(k[i] * x[:, i : i + h, :] for i in range(size))
    return sum(k[i] * x[:, :, i : i + w] for i in range(size))


def keep_mass(maps: jax.Array, tau: float) -> jax.Array:
    """(N, h, w) bool: per map the largest values holding ``tau`` of the total mass (the
    patches whose ascending normalised cumulative sum exceeds 1 - tau, §3c step 3)."""
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    order = jnp.argsort(flat, axis=-1)
    val = jnp.take_along_axis(flat, order, axis=-1)
    cum = jnp.cumsum(val / jnp.sum(val, -1, keepdims=True), axis=-1)
    keep_sorted = cum > 1.0 - tau
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(n)[:, None], order].set(keep_sorted)
    return keep.reshape(maps.shape)


def remove_small(masks: np.ndarray, min_size: int) -> np.ndarray:
    """Drops 8-connected components with fewer than ``min_size`` cells from (N, h, w) masks."""
    out = masks.copy()
    for m in out:
        labelled, count = ndimage.label(m, structure=np.ones((3, 3), bool))
        sizes = np.bincount(labelled.ravel(), minlength=count + 1)
        m[(sizes < min_size)[labelled] & (labelled > 0)] = False
    return out


def attention_foreground(attn: np.ndarray, cfg) -> np.ndarray:
    """Attention foreground of head-averaged CLS attention maps (N, g, g) -> bool (N, g, g): blur,
    keep the top patches holding τ of the mass, drop small components (§3c steps 1-4)."""
    kept = keep_mass(blur(jnp.asarray(attn, jnp.float32), cfg.kernel, cfg.sigma), cfg.tau)
    return remove_small(np.asarray(jax.device_get(kept)), cfg.min_component)


# ----------------------------------------------------------------------------- CBFE
def cluster_precision(ids: np.ndarray, fg: np.ndarray, k: int) -> np.ndarray:
    """prec[c] = mean over the images containing c of |c ∩ fg| / |c| (NaN if c never occurs)."""
    n = len(ids)
    flat = ids.reshape(n, -1).astype(np.int64)
    offset = np.arange(n)[:, None] * k
    size = np.bincount((flat + offset).ravel(), minlength=n * k).reshape(n, k)
    hit = np.bincount(
        (flat + offset).ravel(), weights=fg.reshape(n, -1).ravel().astype(np.float64), minlength=n * k
    ).reshape(n, k)
    present = size > 0
    per_image = np.where(present, hit / np.maximum(size, 1), 0.0)
    with np.errstate(invalid="ignore"):
        return per_image.sum(0) / present.sum(0)


def mean_fg_iou(pred: np.ndarray, gt_fg: np.ndarray) -> float:
    """Mean over images of IoU(pred, gt_fg) (Leopart ``eval_jac``; an empty union counts 1)."""
    inter = (pred & gt_fg).reshape(len(pred), -1).sum(1)
    union = (pred | gt_fg).reshape(len(pred), -1).sum(1)
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def choose_threshold(precs: np.ndarray, ids: np.ndarray, gt_fg: np.ndarray, k: int, cut_range) -> dict:
    """CBFE's threshold from the train split (module docstring step 3, §3c): best cut by mean IoU
    (the last one among ties, as the reference's stable sort), threshold = prec at that cut
    rounded to a multiple of 0.05."""
    ranked = np.argsort(np.nan_to_num(precs, nan=-1.0), kind="stable")
    sorted_precs = np.nan_to_num(precs, nan=-1.0)[ranked]
    best = None
    for cut in range(int(cut_range[0] * k), int(cut_range[1] * k)):
        fg_ids = np.zeros(k, bool)
        fg_ids[ranked[cut:]] = True
        score = mean_fg_iou(fg_ids[ids], gt_fg)
        if best is None or score >= best[1]:
            best = (cut, score)
    grid = np.arange(0, 1, 0.05)
    threshold = float(grid[np.argmin(np.abs(grid - sorted_precs[best[0]]))])
    return {"cut": best[0], "train_fg_iou": best[1], "threshold": threshold}


def relabel(gt: np.ndarray, background, ignore_index: int, num_classes: int) -> np.ndarray:
    """GT with every background class -> 0 and the foreground classes -> 1..C_fg (in order)."""
    table = np.zeros(256, np.uint8)
    fg_classes = [c for c in range(num_classes) if c not in background]
    table[fg_classes] = np.arange(1, len(fg_classes) + 1)
    table[ignore_index] = 255
    return table[gt]


def run(ctx: F.EvalContext) -> dict:
    """CBFE masks (train threshold, val masks) and the CBFE segmentation score (§3c)."""
    cfg, data, inp = ctx.config.cbfe, ctx.config.data, ctx.config.input
    if cfg.community.enabled:
        communities.require_infomap()  # fail before the features, not after
    size = cfg.label_size
    splits = [
        ctx.dense(split, size=inp.size, label_size=size, limit=limit, kinds=("patch", "attn"))
        for split, limit in ((data.train_split, data.limit_train), (data.val_split, data.limit_val))
    ]
    n_train = len(splits[0]["labels"])
    tokens = np.concatenate([s["patch"] for s in splits])
    grid = tokens.shape[1:3]
    z = clustering.reduce(tokens, cfg.pca_dim, ctx.config.kmeans.pca_rows_per_dim, ctx.config.seed)
    z = z.reshape(-1, z.shape[-1])
    gt = relabel(
        np.concatenate([s["labels"] for s in splits]), data.background, data.ignore_index, data.num_classes
    )
    n_fg = data.num_classes - len(data.background)
    gt_fg = gt != 0  # void 255 counts as foreground (eval_jac with_boundary)

    attn_fg = nearest_resize(attention_foreground(np.concatenate([s["attn"] for s in splits]), cfg), size)
    ids = clustering.cluster(z, cfg.k_fg, 0, cfg, spherical=True).reshape((-1,) + grid)
    ids = nearest_resize(ids, size)
    train, val = slice(0, n_train), slice(n_train, None)
    chosen = choose_threshold(
        cluster_precision(ids[train], attn_fg[train], cfg.k_fg),
        ids[train],
        gt_fg[train],
        cfg.k_fg,
        cfg.cut_range,
    )
    fg = np.zeros_like(gt_fg)
    for part in (train, val):
        precs = cluster_precision(ids[part], attn_fg[part], cfg.k_fg)
        fg[part] = np.nan_to_num(precs, nan=-1.0)[ids[part]] >= chosen["threshold"]

    # Foreground-only clustering: a pixel carries its token's feature (nearest upsampling).
    rows = nearest_indices(grid[0], size)[:, None] * grid[1] + nearest_indices(grid[1], size)[None, :]
    pixel_token = (np.arange(len(gt))[:, None, None] * (grid[0] * grid[1]) + rows[None])[fg]

    def fg_only_map(k: int, seed: int) -> np.ndarray:
        """(N, size, size) ids of a K-means of the foreground pixels, background = k."""
        pick = pixel_token
        limit = cfg.max_points_per_centroid * k
        if limit and len(pick) > limit:
            pick = pick[np.random.default_rng(seed).choice(len(pick), limit, replace=False)]
        result = kmeans(z[pick], k, n_iter=cfg.n_iter, n_init=cfg.n_init, init=cfg.init, seed=seed)
        token_ids = clustering.assign(z, result.centroids).reshape((-1,) + grid)
        return np.where(fg, nearest_resize(token_ids, size), k)

    def hungarian(pred: np.ndarray) -> tuple[float, np.ndarray]:
        acc = metrics.ConfusionAccumulator(n_fg + 1, n_fg + 1, ignore_index=255)
        acc.update(pred, gt[val])
        mapping = metrics.hungarian_match(acc.cm)
        return metrics.miou_from_confusion(acc.cm, mapping)["miou"], mapping

    scores, shown = [], None
    for seed in range(cfg.seeds):
        pred = fg_only_map(n_fg, seed)
        score, mapping = hungarian(pred[val])
        scores.append(score)
        if seed == 0:
            shown = metrics.remap(pred[val][: ctx.config.output.n_show], mapping)
    summary = {
        "cbfe_miou": float(np.mean(scores)),
        "val_fg_iou": mean_fg_iou(fg[val], gt_fg[val]),
        "val_attention_fg_iou": mean_fg_iou(attn_fg[val], gt_fg[val]),
    }
    extra = {"community_detection": "off (cbfe.community.enabled=False)"}
    if cfg.community.enabled:
        extra["community_detection"] = community_scores(
            fg_only_map(cfg.community.k, 0), val, cfg.community, n_fg, hungarian
        )
        summary["cd_miou"] = extra["community_detection"]["mean"]
        summary["cd_miou_best"] = extra["community_detection"]["best"]
    if ctx.workdir and ctx.config.output.n_show:
        v = splits[1]
        rows_png = [
            [img, gt[val][i], attn_fg[val][i].astype(np.uint8), fg[val][i].astype(np.uint8), shown[i]]
            for i, img in enumerate(v["show"])
        ]
        report.save_panels(
            ctx.path("cbfe.png"),
            rows_png,
            titles=("image", "ground truth", "attention fg", "CBFE fg", f"K={n_fg}"),
        )
    return {
        "summary": summary,
        "miou_per_seed": scores,
        "threshold": chosen["threshold"],
        "cut": chosen["cut"],
        "train_fg_iou_at_cut": chosen["train_fg_iou"],
        "n_train": n_train,
        "n_val": len(gt) - n_train,
        "tau": cfg.tau,
        **extra,
    }


def community_scores(cd_map: np.ndarray, val: slice, cfg, n_fg: int, hungarian) -> dict:
    """Step 5: co-occurrence graph of the K_cd map (train + val), one Infomap run per seed, the
    merged val map scored with ``hungarian``; mean ± std and best over the seeds."""
    adjacency = communities.cooccurrence(cd_map, cfg.k + 1)
    graph = communities.edges(adjacency, cfg.weight_threshold)
    scores, groups = [], []
    for seed in cfg.seeds:
        module = communities.detect(graph, cfg.k + 1, seed, cfg.markov_time, n_fg)
        group = communities.compact(module, n_fg + 1)
        scores.append(hungarian(group[cd_map[val]])[0])
        groups.append(int(group.max()) + 1)
    linked = {n for e in graph for n in e[:2]}
    return {
        **communities.summarise(scores),
        "seeds": list(cfg.seeds),
        "groups_per_seed": groups,
        "n_edges": len(graph),
        "n_linked_clusters": len(linked),
        "k": cfg.k,
        "weight_threshold": cfg.weight_threshold,
        "markov_time": cfg.markov_time,
    }
