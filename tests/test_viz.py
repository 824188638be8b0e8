"""dense_jax.viz against hand-built features: PCA colours, cosine rankings, 1-NN agreement."""

import numpy as np

from dense_jax import viz


def test_pca_rgb_recovers_planted_directions():
    rng = np.random.default_rng(0)
    # per-token coefficients of 2 images of 4×4: zero-mean and mutually orthogonal over the tokens
    coefs = rng.normal(size=(32, 3))
    a, b, c = np.linalg.qr(coefs - coefs.mean(0))[0].T.reshape(3, 2, 4, 4)
    basis = np.linalg.qr(rng.normal(size=(16, 3)))[0].T  # three orthonormal directions in 16-d
    tokens = 10 * a[..., None] * basis[0] + 3 * b[..., None] * basis[1] + 1 * c[..., None] * basis[2]
    tokens += 1e-4 * rng.normal(size=tokens.shape)
    rgb, share = viz.pca_rgb(tokens)
    assert rgb.shape == (2, 4, 4, 3) and rgb.dtype == np.uint8
    assert share > 0.999
    for channel, coef in enumerate((a, b, c)):  # each colour is its coefficient, up to sign and scale
        corr = np.corrcoef(rgb[..., channel].ravel().astype(float), coef.ravel())[0, 1]
        assert abs(corr) > 0.99
        assert rgb[..., channel].min() == 0 and rgb[..., channel].max() == 255
    again, _ = viz.pca_rgb(tokens[::-1])  # one PCA for all images: order does not change colours
    np.testing.assert_array_equal(again[::-1], rgb)


def test_cosine_ranking_and_similarity_map():
    refs = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0]])
    order, sims = viz.cosine_ranking(np.array([2.0, 0.0]), refs)
    np.testing.assert_array_equal(order, [0, 2, 1, 3])
    np.testing.assert_allclose(sims, [1.0, np.sqrt(0.5), 0.0, -1.0])
    heat = viz.similarity_map(np.array([2.0, 0.0]), refs.reshape(2, 2, 2))
    np.testing.assert_array_equal(heat[..., 0], [[255, 128], [218, 0]])  # (cos + 1) * 127.5


def test_nearest_label_agreement_hand_case():
    # image 0 tokens: e0 (label 1), e1 (label 2); image 1: e0 (label 1), e1 (label 3)
    e0, e1 = np.eye(2)
    patch = np.array([[[e0, e1]], [[e0, e1]]])  # (2, 1, 2, 2)
    labels = np.array([[[1, 2]], [[1, 3]]])
    assert viz.nearest_label_agreement(patch, labels, ignore_index=255) == 0.5
    labels[1, 0, 1] = 255  # the mismatched pair is ignored: the rest agrees
    assert viz.nearest_label_agreement(patch, labels, ignore_index=255) == 1.0


def test_sorted_neighbour_rows_rank_the_other_image():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    images[1, :4, 4:] = 200  # token (0, 1) of image 1 is the bright one
    patch = np.zeros((2, 2, 2, 2))
    patch[0, 0, 0] = [1, 0]
    patch[1] = [[[0, 1], [1, 0.1]], [[-1, 0], [0.5, 0.5]]]
    rows = viz.sorted_neighbour_rows(images, patch, [(0, 0)], patch_size=4, n=2)
    assert len(rows) == 1 and len(rows[0]) == 2 + 2 + 2
    np.testing.assert_array_equal(rows[0][2], np.full((4, 4, 3), 200))  # most similar: token (0, 1)
    assert rows[0][0][0, 0].tolist() == [255, 0, 0]  # query boxed in red
