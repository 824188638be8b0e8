"""COMUS discovery (methods/comus/discovery.py; comus.md §2-§5, checks §10.2, 4-8, 11): proposal
geometry, crops, spectral clustering = scikit-learn's, blobs, the filter rules, pseudo-masks, and
synthetic images whose pseudo-masks score Hungarian mIoU 100."""

import ml_collections as mlc
import numpy as np
import pytest
from sklearn.cluster import SpectralClustering
from sklearn.metrics import adjusted_rand_score

from dense_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from dense_jax.methods.comus import discovery, scoring


def test_one_proposal_spans_two_blobs_and_small_masks_are_dropped():
    mask = np.zeros((60, 80), bool)
    mask[5:20, 10:30] = True  # 300 px
    mask[40:51, 60:71] = True  # 121 px
    assert discovery.proposal(mask) == (5, 10, 51, 71)  # exclusive max
    tiny = np.zeros((60, 80), bool)
    tiny[:20, :20] = True  # exactly 400: dropped (area > 400 is kept)
    assert discovery.proposal(tiny) is None
    tiny[20, 0] = True
    assert discovery.proposal(tiny) == (0, 0, 21, 20)
    assert discovery.proposal(np.zeros((5, 5), bool), min_area=0) is None


def test_crop_is_the_box_resized_and_normalised():
    image = np.zeros((50, 60, 3), np.uint8)
    image[10:20, 30:45] = (200, 100, 50)
    out = discovery.crop_input(image, (10, 30, 20, 45), 256)
    assert out.shape == (256, 256, 3) and out.dtype == np.float32
    expected = (np.array([200, 100, 50]) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-5)


def test_spectral_clustering_equals_scikit_learn():
    """§10.4: labels equal SpectralClustering's up to permutation; the embedding is (N, K) with a
    constant first column on a connected graph; n_neighbors really changes the graph."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 1.0, size=(40, 16)) for c in (0.0, 0.7, 1.4)])  # one connected graph
    labels, emb, centers = discovery.spectral_cluster(x, 3, n_neighbors=30, n_init=10, seed=3)
    reference = SpectralClustering(
        3,
        affinity="nearest_neighbors",
        n_neighbors=30,
        assign_labels="kmeans",
        n_init=10,
        random_state=3,
        eigen_solver="arpack",
        eigen_tol=0.0,
    ).fit(x)
    assert adjusted_rand_score(labels, reference.labels_) == 1.0
    assert emb.shape == (120, 3) and centers.shape == (3, 3)
    np.testing.assert_allclose(emb[:, 0], emb[0, 0], rtol=1e-6)
    _, emb5, _ = discovery.spectral_cluster(x, 3, n_neighbors=5, n_init=10, seed=3)
    assert not np.allclose(np.abs(emb5[:, 1:]), np.abs(emb[:, 1:]), atol=1e-3)
    again = discovery.spectral_cluster(x, 3, n_neighbors=30, n_init=10, seed=3)
    np.testing.assert_array_equal(again[0], labels)  # §10.11: bit-identical with a fixed seed
    np.testing.assert_array_equal(again[1], emb)


DISCONNECTED = pytest.mark.filterwarnings("ignore:Graph is not fully connected:UserWarning")


@DISCONNECTED
def test_well_separated_blobs_are_recovered():
    """§10.5: five Gaussian clusters of 60 points in 384-d: ARI 1, Hungarian accuracy 100 %."""
    rng = np.random.default_rng(1)
    means = rng.normal(0, 10.0, size=(5, 384))
    truth = np.repeat(np.arange(5), 60)
    x = means[truth] + rng.normal(size=(300, 384))
    labels, _, _ = discovery.spectral_cluster(x, 5, seed=0)
    assert adjusted_rand_score(truth, labels) == 1.0
    cm = np.zeros((5, 5), np.int64)
    np.add.at(cm, (truth, labels), 1)
    assert scoring.scores(cm, "hungarian")["pixel_accuracy"] == 1.0


@pytest.mark.parametrize("n, parity, clean", [(10, 8, 8), (11, 8, 9), (1, 0, 1), (5, 4, 4), (2, 1, 2)])
def test_filter_keeps_the_reference_count_per_cluster(n, parity, clean):
    """§10.7: parity = {d < percentile80} keeps ceil(0.8 (n - 1)); clean keeps ceil(0.8 n), never 0."""
    d = np.random.default_rng(n).permutation(np.linspace(0.1, 0.9, n))
    labels = np.zeros(n, np.int64)
    kept = discovery.keep_core(d, labels, 80, "parity")
    assert kept.sum() == parity
    np.testing.assert_array_equal(kept, d < np.percentile(d, 80))
    kept = discovery.keep_core(d, labels, 80, "clean")
    assert kept.sum() == clean
    if (~kept).any():
        assert d[~kept].min() >= d[kept].max()


def test_filter_is_per_cluster_and_core_100_keeps_all():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [10, 11, 1])
    d = rng.uniform(size=22)
    kept = discovery.keep_core(d, labels, 80, "parity")
    assert [kept[labels == c].sum() for c in range(3)] == [8, 8, 0]
    for c in range(3):
        inside = labels == c
        if (inside & ~kept).any() and (inside & kept).any():
            assert d[inside & ~kept].min() >= d[inside & kept].max()
    assert discovery.keep_core(d, labels, 100, "parity").all()
    with pytest.raises(ValueError, match="filter_rule"):
        discovery.keep_core(d, labels, 80, "nope")


def test_cosine_distance_is_taken_to_the_own_centre():
    emb = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    centers = np.array([[2.0, 0.0], [0.0, 1.0]])
    d = discovery.cosine_distance(emb, centers, np.array([0, 0, 1]))
    np.testing.assert_allclose(d, [0.0, 1 - 1 / np.sqrt(2), 0.0], atol=1e-12)


def test_pseudo_mask_is_label_plus_one_on_the_saliency_only():
    sal = np.zeros((7, 9), bool)
    sal[2:5, 3:8] = True
    mask = discovery.pseudo_mask(sal, 4)
    assert mask.dtype == np.uint8 and mask.shape == (7, 9)
    assert (mask[~sal] == 0).all() and (mask[sal] == 5).all()


@DISCONNECTED
def test_synthetic_objects_give_pseudo_masks_with_hungarian_miou_100():
    """§10.6: K = 4 object types (distinct colours) on noise, saliency = the true shape, a
    mean-colour stub feature of the crop: the pseudo-masks equal the GT up to the id permutation."""
    rng = np.random.default_rng(0)
    colours = np.array([[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20]])
    k, n = 4, 80
    data = mlc.ConfigDict(dict(num_classes=k + 1, background=(0,), ignore_index=255))
    scorer = scoring.Scorer(data, k + 1)
    images, masks, gts = [], [], []
    for i in range(n):
        image = rng.integers(0, 60, size=(48, 64, 3)).astype(np.uint8)
        yy, xx = np.mgrid[:48, :64]
        cy, cx, r = rng.integers(14, 34), rng.integers(14, 50), rng.integers(12, 14)
        shape = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        cls = i % k
        image[shape] = colours[cls]
        images.append(image)
        masks.append(shape)
        gts.append(np.where(shape, cls + 1, 0).astype(np.uint8))
    boxes = [discovery.proposal(m) for m in masks]
    assert all(b is not None for b in boxes)
    feats = np.stack([im[b[0] : b[2], b[1] : b[3]].reshape(-1, 3).mean(0) for im, b in zip(images, boxes)])
    labels, _, _ = discovery.spectral_cluster(feats, k, n_neighbors=10, seed=0)
    for m, label, gt in zip(masks, labels, gts):
        scorer.add(discovery.pseudo_mask(m, int(label)), gt)
    result = scorer.result()
    assert result["matching"] == "hungarian" and result["miou"] == 1.0
