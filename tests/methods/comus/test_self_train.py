"""COMUS self-training smoke test (comus.md §10.10): a tiny ViT trained through the trainer on
synthetic pseudo-labels lowers its loss, its argmax reproduces the training pseudo-labels, and the
teacher labels come back at each image's original size with values in {0..K}."""

import json

import numpy as np

from configs import comus_voc
from dense_jax.core.sharding import make_mesh
from dense_jax.methods import segmentation
from dense_jax.methods.comus import pipeline, self_train
from dense_jax.train.loop import fit

K = 3
COLOURS = np.array([[60, 60, 60], [230, 40, 40], [40, 200, 60], [50, 80, 230]], np.uint8)


def _synthetic(n: int, h: int = 48, w: int = 60, seed: int = 0) -> list[dict]:
    """Grey background with one coloured rectangle (class 1..K) on the 4×4 cell grid the 64² input
    maps to (12 × 15 px cells); the pseudo-label is the class on the rectangle, 0 elsewhere."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        r0, c0 = rng.integers(0, 3, 2)
        r1, c1 = r0 + rng.integers(1, 4 - r0 + 1), c0 + rng.integers(1, 4 - c0 + 1)
        mask = np.zeros((h, w), np.uint8)
        mask[12 * r0 : 12 * r1, 15 * c0 : 15 * c1] = 1 + i % K
        image = COLOURS[mask] + rng.integers(0, 20, (h, w, 3)).astype(np.uint8)
        items.append({"image": image, "mask": mask, "id": f"{i:03d}"})
    return items


def test_self_training_fits_the_pseudo_labels_and_labels_at_the_original_size(tmp_path):
    config = comus_voc.get_config("smoke")
    config.discovery.n_clusters = K
    config.self_train.update(dict(epochs=(15,), splits=("train",), limits=(0,), lr=3e-3, batch_size=8))
    source = _synthetic(48)
    seg_config = self_train.segmentation_config(config, 1)
    _, params = pipeline.backbone(config)
    state = fit(seg_config, segmentation, source, str(tmp_path), params)
    with open(tmp_path / "metrics.jsonl") as f:
        losses = [r["loss"] for r in map(json.loads, f) if "loss" in r]
    assert losses[-1] < 0.5 * losses[0], losses

    labeller = self_train.make_labeller(
        seg_config, make_mesh(config.mesh.shape), config.self_train.batch_size
    )
    labels = [
        p
        for start in range(0, 48, 8)
        for p in labeller(state, [it["image"] for it in source[start : start + 8]])
    ]
    assert all(p.shape == (48, 60) and p.dtype == np.uint8 and p.max() <= K for p in labels)
    accuracy = np.mean([np.mean(p == it["mask"]) for p, it in zip(labels, source)])
    assert accuracy > 0.95, accuracy
