"""COMUS saliency (methods/comus/saliency.py; comus.md §2, §8, §10.3): DINOSeg and LOST against
NumPy transcriptions of LOST's code and hand-built attention, the threshold's normalisation, the
folder mode's bad inputs and the checkpoint hook's error."""

import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from dense_jax.methods.comus import saliency


def lost_oracle(keys: np.ndarray, grid, k_patches: int = 100) -> np.ndarray:
    """LOST ``lost`` + ``patch_scoring`` + ``detect_box`` (one image), in NumPy; keys (heads, 1+N, hd)."""
    feats = keys[:, 1:].transpose(1, 0, 2).reshape(keys.shape[1] - 1, -1).astype(np.float64)
    a = feats @ feats.T
    scoring = a.copy()
    np.fill_diagonal(scoring, 0)
    scoring[scoring < 0] = 0
    degree = np.sum(scoring > 0, axis=1)
    order = np.argsort(degree, kind="stable")
    seed = order[0]
    potentials = order[:k_patches]
    similars = potentials[a[seed, potentials] > 0.0]
    m = np.sum(a[similars, :], axis=0)
    labelled, _ = ndimage.label(m.reshape(grid) > 0.0)
    cc = labelled[np.unravel_index(seed, grid)]
    return labelled == cc


def test_lost_matches_numpy_oracle_on_random_keys():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(3, 2, 1 + 36, 4)).astype(np.float32) + 0.3
    ours = saliency.lost(jnp.asarray(keys), (6, 6), k_patches=10)
    for b in range(3):
        np.testing.assert_array_equal(ours[b], lost_oracle(keys[b], (6, 6), 10))


def test_lost_finds_the_object_of_hand_built_keys():
    """Background patches share one key, a 2×2 object another orthogonal one: the object patches
    have the lowest degree (3), so the seed is on the object and the mask is exactly the object."""
    grid = (5, 5)
    obj = np.zeros(grid, bool)
    obj[1:3, 2:4] = True
    keys = np.zeros((1, 1, 26, 2), np.float32)
    keys[0, 0, 1:][~obj.ravel()] = (1.0, 0.0)
    keys[0, 0, 1:][obj.ravel()] = (0.0, 1.0)
    np.testing.assert_array_equal(saliency.lost(jnp.asarray(keys), grid)[0], obj)


def test_dinoseg_keeps_the_mass_then_the_largest_component():
    """Two blobs (4 and 2 patches) of attention 0.1 on a 0.01 background: the top 60 % of the
    mass is exactly both blobs (NumPy transcription of LOST's dino_seg), then the 4-patch one is
    kept. Head 1 is a copy, so the head mean (head=-1) gives the same."""
    attn = np.full((1, 2, 6, 6), 0.01, np.float32)
    attn[0, 0, 0:2, 0:2] = 0.1
    attn[0, 0, 4, 4:6] = 0.1
    attn[0, 1] = attn[0, 0]
    big = np.zeros((6, 6), bool)
    big[0:2, 0:2] = True
    flat = attn[0, 0].ravel()
    idx = np.argsort(flat, kind="stable")
    cum = np.cumsum(flat[idx] / flat.sum())
    kept = np.zeros(36, bool)
    kept[idx] = cum > 0.4
    both = big.copy()
    both[4, 4:6] = True
    np.testing.assert_array_equal(kept.reshape(6, 6), both)
    np.testing.assert_array_equal(saliency.dinoseg(jnp.asarray(attn), 0.6, head=0)[0], big)
    np.testing.assert_array_equal(saliency.dinoseg(jnp.asarray(attn), 0.6, head=-1)[0], big)


def test_largest_component_of_an_empty_mask_is_empty():
    assert not saliency.largest_component(np.zeros((4, 4), bool)).any()


def test_patch_masks_go_to_the_original_size_by_nearest():
    patches = np.array([[1, 0], [0, 1]], bool)
    out = saliency.to_original(patches, (32, 48))
    assert out.shape == (32, 48)
    assert out[:16, :24].all() and not out[:16, 24:].any() and out[16:, 24:].all()


def test_per_image_threshold_ignores_the_batch_and_parity_mode_does_not():
    """§10.3: per-image min-max makes a mask independent of its batch; the code's batch-wide
    min-max lets a bright neighbour erase a dim image's saliency."""
    rng = np.random.default_rng(0)
    dim = rng.uniform(0.0, 0.3, (1, 8, 8))
    bright = rng.uniform(0.0, 1.0, (1, 8, 8))
    alone = saliency.threshold_probabilities(dim)
    together = saliency.threshold_probabilities(np.concatenate([dim, bright]))
    np.testing.assert_array_equal(together[0], alone[0])
    assert alone[0].any()
    assert not saliency.threshold_probabilities(np.concatenate([dim, bright]), normalize="batch")[0].any()
    norm = (dim[0] - dim.min()) / (dim.max() - dim.min())
    np.testing.assert_array_equal(alone[0], norm > 0.5)


def _write(folder, key, array):
    Image.fromarray(array).save(folder / f"{key}.png")


def test_dir_mode_reads_binary_pngs_and_counts_missing_ones(tmp_path):
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:9] = 255
    _write(tmp_path, "a", mask)
    _write(tmp_path, "b", (mask > 0).astype(np.uint8))  # 0/1 masks work too
    np.testing.assert_array_equal(saliency.read_mask_png(str(tmp_path / "a.png"), (10, 12)), mask > 0)
    np.testing.assert_array_equal(saliency.read_mask_png(str(tmp_path / "b.png"), (10, 12)), mask > 0)
    assert saliency.missing_masks(str(tmp_path), ["a", "b", "c"], 0.5) == ["c"]
    with pytest.raises(saliency.SaliencyError, match=r"1 of 3 images have no saliency mask .*c\.png"):
        saliency.missing_masks(str(tmp_path), ["a", "b", "c"], 0.1)


def test_dir_mode_names_a_mask_of_the_wrong_size(tmp_path):
    _write(tmp_path, "a", np.zeros((10, 12), np.uint8))
    with pytest.raises(saliency.SaliencyError, match=r"a\.png is 12x10 but its image is 13x10"):
        saliency.read_mask_png(str(tmp_path / "a.png"), (10, 13))
    with pytest.raises(saliency.SaliencyError, match="is not a folder"):
        saliency.missing_masks(str(tmp_path / "nope"), ["a"], 0.0)


def _stub_factory(path):
    """A saliency 'network' for the checkpoint hook: the red channel as the probability."""
    return lambda images: images[..., 0].astype(np.float32) / 255.0


def test_checkpoint_hook_needs_the_file_and_calls_the_factory(tmp_path):
    cfg = mlc.ConfigDict(dict(checkpoint=str(tmp_path / "basnet.pth"), factory="", size=16, threshold=0.5))
    cfg.normalize = "image"
    with pytest.raises(saliency.SaliencyError, match="basnet.pth does not exist"):
        saliency.load_checkpoint_model(cfg)
    (tmp_path / "basnet.pth").write_bytes(b"weights")
    with pytest.raises(saliency.SaliencyError, match="module:function"):
        saliency.load_checkpoint_model(cfg)
    cfg.factory = f"{__name__}:_stub_factory"
    predict = saliency.load_checkpoint_model(cfg)
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, 15:, 0] = 255
    (mask,) = saliency.checkpoint_masks(predict, [image], cfg)
    assert mask.shape == (20, 30) and mask[:, 16:].all() and not mask[:, :14].any()
