"""COMUS object discovery (Alg. 1; comus.md §2-§5): one proposal per salient image, the CLS
feature of its crop, spectral clustering, per-cluster filtering and pseudo-masks.

- Proposal (§2): the bounding box of *all* salient pixels (skimage ``regionprops`` on the binary
  mask gives one region even when it is disconnected), exclusive max; an image is kept iff its
  area > ``min_area`` = 400 pixels at the original resolution.
- Feature (§3): the crop (background inside the box not masked) resized to ``crop_size``² (256,
  bilinear), ImageNet-normalised, the backbone's CLS after the final norm; no L2 norm or PCA.
  Batched, jitted, the batch split over the mesh's ``'data'`` axis (`dense_jax.eval.features.Extractor`).
- Clustering (§4): the reference's unrolled scikit-learn ``SpectralClustering(affinity=
  'nearest_neighbors', assign_labels='kmeans')``: binary 30-NN connectivity with self, W = (A+Aᵀ)/2,
  ``spectral_embedding`` (normalised Laplacian, K components, ``drop_first=False``), ``k_means``
  with 10 restarts, returning the embedding too. The reference is unseeded (``random_state=None``);
  we seed it (``seed``). The reference's 'amg' solver needs pyamg; 'arpack' (our default) gives the
  same subspace. ``clustering="kmeans"``: k-means on the raw features (Table 5's ablation).
- Filter (§4.5-6): d_i = cosine distance between emb_i and its centre in the spectral embedding.
  ``filter_rule="parity"`` (the code): keep d_i < np.percentile(d_c, core_size) (strict, linear
  interpolation), which keeps ceil(0.8(n-1)) of n distinct distances and drops singletons;
  ``"clean"``: keep the ceil(core_size·n/100) smallest (ties by index), never emptying a cluster.
  ``core_size >= 100`` keeps everything (the k-means ablation's setting).
- Pseudo-mask (§5): 0 everywhere, cluster + 1 on the salient pixels, at the original size; no
  ignore label.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dense_jax.core.sharding import to_host
from dense_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize

FILTER_RULES = ("parity", "clean")
CLUSTERINGS = ("spectral", "kmeans")


def proposal(mask: np.ndarray, min_area: int = 400) -> tuple[int, int, int, int] | None:
    """(min_row, min_col, max_row, max_col) of all salient pixels of a bool (H, W) mask, max
    exclusive; None when the area is at most ``min_area`` (the image gets no proposal)."""
    if int(mask.sum()) <= min_area:
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def crop_input(image: np.ndarray, box, size: int = 256, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """float32 (size, size, 3): the image cropped to ``box`` (§3), resized bilinearly (PIL),
    normalised. (The reference resizes with OpenCV's INTER_LINEAR, without antialiasing.)"""
    r0, c0, r1, c1 = box
    crop = Image.fromarray(np.ascontiguousarray(image[r0:r1, c0:c1]))
    return normalize(crop.resize((size, size), Image.Resampling.BILINEAR), mean, std)


def crop_features(
    extractor, images, boxes, size: int = 256, batch_size: int = 64, progress=None
) -> np.ndarray:
    """(N, D) CLS features of the crops of ``images`` at ``boxes``, ``batch_size`` crops per
    jitted call (padded to a fixed shape; ``extractor`` has the kind ``cls``)."""
    bs = extractor.batch_size(batch_size)
    out = []
    for start in range(0, len(images), bs):
        chunk = [
            crop_input(im, box, size)
            for im, box in zip(images[start : start + bs], boxes[start : start + bs])
        ]
        batch = np.zeros((bs, size, size, 3), np.float32)
        batch[: len(chunk)] = chunk
        out.append(to_host(extractor(batch)["cls"])[: len(chunk)])
        if progress is not None:
            progress.update(len(chunk))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def spectral_cluster(
    feats: np.ndarray,
    k: int,
    n_neighbors: int = 30,
    n_init: int = 10,
    seed: int = 0,
    eigen_solver: str = "arpack",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels (N,), spectral embedding (N, k), k-means centres (k, k)) of ``feats`` (§4.1-3)."""
    from sklearn.cluster import k_means
    from sklearn.manifold import spectral_embedding
    from sklearn.neighbors import kneighbors_graph

    connectivity = kneighbors_graph(feats, n_neighbors=n_neighbors, include_self=True)
    affinity = 0.5 * (connectivity + connectivity.T)
    emb = spectral_embedding(
        affinity,
        n_components=k,
        eigen_solver=eigen_solver,
        random_state=seed,
        eigen_tol=0.0,
        drop_first=False,
    )
    centers, labels, _ = k_means(emb, k, random_state=seed, n_init=n_init)
    return labels, emb, centers


def kmeans_cluster(feats: np.ndarray, k: int, n_init: int = 10, seed: int = 0):
    """(labels, feats, centres) of k-means on the raw features (the ablation, §4.7)."""
    from sklearn.cluster import k_means

    centers, labels, _ = k_means(np.asarray(feats, np.float64), k, random_state=seed, n_init=n_init)
    return labels, np.asarray(feats, np.float64), centers


def cosine_distance(emb: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 - cos(emb_i, centers[labels_i]) per row (scipy ``cosine``, §4.5)."""
    c = np.asarray(centers, np.float64)[labels]
    e = np.asarray(emb, np.float64)
    return 1.0 - np.sum(e * c, -1) / (np.linalg.norm(e, axis=-1) * np.linalg.norm(c, axis=-1))


def keep_core(
    distances: np.ndarray, labels: np.ndarray, core_size: float = 80, rule: str = "parity"
) -> np.ndarray:
    """bool (N,): the members kept by the per-cluster filter (module docstring, §4.6)."""
    if rule not in FILTER_RULES:
        raise ValueError(f"unknown discovery.filter_rule {rule!r}; use {' or '.join(FILTER_RULES)}")
    keep = np.ones(len(labels), bool)
    if core_size >= 100:
        return keep
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        d = distances[members]
        if rule == "parity":
            keep[members] = d < np.percentile(d, core_size)
        else:
            n_keep = -(-int(round(core_size * 100)) * len(members) // 10000)  # ceil(core·n/100), exact
            order = members[np.lexsort((members, d))]
            keep[order[n_keep:]] = False
    return keep


def pseudo_mask(saliency: np.ndarray, label: int) -> np.ndarray:
    """uint8 (H, W): 0 off the saliency, ``label + 1`` on it (§5)."""
    return np.where(saliency, label + 1, 0).astype(np.uint8)
