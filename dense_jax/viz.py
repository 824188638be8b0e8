"""Pictures of dense features with numpy and PIL only: PCA colours of patch tokens and patches
ranked by similarity to a query patch (what NeCo's sorting acts on). Used by the ``pca``
evaluation protocol (`dense_jax.eval.pca`) and the notebooks; PNGs go through
`dense_jax.eval.report.save_panels`."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def pca_components(tokens: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray, float]:
    """The top-`k` principal directions of the rows of `tokens` (N, D).

    Returns (mean (D,), directions (k, D), share of the variance they explain). Each
    direction's sign is fixed so that its largest-magnitude entry is positive (deterministic
    colours for the same features).
    """
    x = np.asarray(tokens, np.float64)
    mean = x.mean(0)
    centred = x - mean
    values, vectors = np.linalg.eigh(centred.T @ centred / max(len(x), 1))
    order = np.argsort(values)[::-1][:k]
    directions = vectors[:, order].T
    signs = np.sign(directions[np.arange(len(order)), np.argmax(np.abs(directions), axis=1)])
    total = float(values.clip(min=0).sum())
    share = float(values[order].clip(min=0).sum() / total) if total > 0 else 0.0
    return mean, directions * signs[:, None], share


def pca_rgb(patch: np.ndarray) -> tuple[np.ndarray, float]:
    """(B, h, w, D) patch tokens → (B, h, w, 3) uint8: the first three principal components of
    all the tokens together as red, green, blue, each min–max scaled over all images (so the
    same colour means the same feature direction in every image); and their variance share."""
    patch = np.asarray(patch, np.float32)
    flat = patch.reshape(-1, patch.shape[-1])
    mean, directions, share = pca_components(flat, 3)
    projected = (flat - mean) @ directions.T
    if projected.shape[1] < 3:  # fewer than 3 feature dims: pad with zeros (grey channels)
        projected = np.pad(projected, ((0, 0), (0, 3 - projected.shape[1])))
    low, high = projected.min(0), projected.max(0)
    scaled = (projected - low) / np.where(high > low, high - low, 1.0)
    rgb = np.round(255 * scaled).astype(np.uint8)
    return rgb.reshape(patch.shape[:-1] + (3,)), share


def cosine_ranking(query: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the `references` rows (N, D) by decreasing cosine similarity to `query` (D,),
    ties by lower index, and the similarities in that order."""
    q = np.asarray(query, np.float64)
    r = np.asarray(references, np.float64)
    sims = r @ q / np.maximum(np.linalg.norm(r, axis=1) * np.linalg.norm(q), 1e-12)
    order = np.argsort(-sims, kind="stable")
    return order, sims[order]


def nearest_label_agreement(patch: np.ndarray, labels: np.ndarray, ignore_index: int) -> float:
    """Share of the labelled tokens whose most similar token (cosine) in *another* image has
    the same label: 1-NN retrieval accuracy across images. `patch` (B, h, w, D), `labels`
    (B, h, w) at the token grid."""
    b, h, w, d = patch.shape
    x = np.asarray(patch, np.float32).reshape(b * h * w, d)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = np.asarray(labels).reshape(-1)
    image = np.repeat(np.arange(b), h * w)
    sims = x @ x.T
    sims[image[:, None] == image[None, :]] = -np.inf
    nearest = np.argmax(sims, axis=1)
    valid = (y != ignore_index) & (y[nearest] != ignore_index)
    return float(np.mean(y[valid] == y[nearest][valid])) if valid.any() else 0.0


def patch_crop(image: np.ndarray, row: int, col: int, patch: int) -> np.ndarray:
    """The (patch, patch, 3) pixels of token (row, col) of a uint8 image at the token grid's size."""
    return np.asarray(image)[row * patch : (row + 1) * patch, col * patch : (col + 1) * patch]


def boxed(image: np.ndarray, row: int, col: int, patch: int, colour=(255, 0, 0)) -> np.ndarray:
    """`image` with a box around token (row, col)."""
    img = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    x, y = col * patch, row * patch
    ImageDraw.Draw(img).rectangle([x, y, x + patch - 1, y + patch - 1], outline=colour, width=2)
    return np.asarray(img)


def similarity_map(query: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """(h, w) uint8 heat map of the cosine similarity of every token of `patch` (h, w, D) to
    `query` (D,), mapped from [-1, 1] to [0, 255] as grey."""
    h, w, d = patch.shape
    order, sims = cosine_ranking(query, patch.reshape(-1, d))
    flat = np.empty(h * w)
    flat[order] = sims
    grey = np.round((flat.reshape(h, w) + 1) * 127.5).clip(0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def sorted_neighbour_rows(
    images: np.ndarray, patch: np.ndarray, queries: list[tuple[int, int]], patch_size: int, n: int = 6
) -> list[list[np.ndarray]]:
    """Panel rows for query tokens of image 0 against the tokens of image 1: query (boxed) |
    similarity map on image 1 | the `n` most similar patches of image 1, best first | the `n`
    least similar, least last. `images` (≥2, S, S, 3) uint8 at the token grid × `patch_size`."""
    h, w, d = patch.shape[1:]
    rows = []
    for r, c in queries:
        order, _ = cosine_ranking(patch[0, r, c], patch[1].reshape(-1, d))
        crops = [patch_crop(images[1], int(i) // w, int(i) % w, patch_size) for i in order]
        heat = np.asarray(
            Image.fromarray(similarity_map(patch[0, r, c], patch[1])).resize(
                images.shape[2:0:-1], Image.Resampling.NEAREST
            )
        )
        rows.append([boxed(images[0], r, c, patch_size), heat] + crops[:n] + crops[-n:])
    return rows
