"""CrOC's cluster figure (dense_jax/eval/croc_clusters.py): the evaluate CLI path on the scenes
writes one PNG row per image with view 1, view 2 and both views of every head, and the token
colours follow the clusters (invalid ones white)."""

import os

import numpy as np
from PIL import Image

from configs.eval.croc_clusters import get_config
from dense_jax import evaluate
from dense_jax.eval.croc_clusters import INVALID, token_labels


def test_token_labels_mark_invalid_clusters():
    assign = np.zeros((1, 4, 3), np.float32)
    assign[0, [0, 2], 0] = 0.5  # cluster 0: both views
    assign[0, 1, 2] = 0.9  # cluster 2: view 1 only
    assign[0, 3, 1] = 0.2
    valid = np.array([[True, True, False]])
    np.testing.assert_array_equal(token_labels(assign, valid), [[1, INVALID, 1, 2]])


def test_cluster_png_per_head(tmp_path):
    config = get_config("demo")
    config.croc_clusters.n_images = 2
    results = evaluate.evaluate(config, str(tmp_path), log=lambda _: None)["croc_clusters"]
    assert 0.0 < results["summary"]["valid_share"] <= 1.0
    assert 2 <= results["k_mean"] <= config.croc_clusters.clustering.k_max
    with Image.open(os.path.join(tmp_path, "croc_clusters.png")) as png:
        png_size = png.size
    size, gap, title, heads = config.croc_clusters.view_size, 4, 14, 3  # vit_demo16: 3 heads
    assert png_size == ((2 + 2 * heads) * (size + gap) + gap, title + 2 * (size + gap) + gap)
