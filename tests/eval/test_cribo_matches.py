"""CrIBo's match figure (dense_jax/eval/cribo_matches.py): the NN of each object lies in another
image and is the cosine arg-max over valid objects; the evaluate CLI path on the scenes writes
one PNG row of four panels per image."""

import os

import numpy as np
from PIL import Image

from configs.eval.cribo_matches import get_config
from dense_jax import evaluate
from dense_jax.eval.cribo_matches import matches


def test_matches_skip_own_image_and_invalid_objects():
    objects = np.array([[[1, 0], [0, 1]], [[1, 0.1], [5, 5]], [[0.1, 1], [1, 0]]], np.float32)
    valid = np.array([[True, True], [True, True], [True, False]])  # (2, 1) is a copy of (0, 0)
    found, cosine = matches(objects, valid)
    assert found[0, 0].tolist() == [1, 0] and found[0, 1].tolist() == [2, 0]
    assert found[2, 0].tolist() == [0, 1]
    np.testing.assert_allclose(cosine[0, 0], 1 / np.sqrt(1.01), rtol=1e-6)


def test_match_png(tmp_path):
    config = get_config("demo")
    config.cribo_matches.n_images = 3
    results = evaluate.evaluate(config, str(tmp_path), log=lambda _: None)["cribo_matches"]
    assert -1.0 <= results["summary"]["match_cosine"] <= 1.0 and results["objects_per_image"] > 0
    with Image.open(os.path.join(tmp_path, "cribo_matches.png")) as png:
        png_size = png.size
    size, gap, title = config.cribo_matches.view_size, 4, 14
    assert png_size == (4 * (size + gap) + gap, title + 3 * (size + gap) + gap)
