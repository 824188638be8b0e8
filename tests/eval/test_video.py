"""DAVIS label propagation (evaluation.md §4, §8.13): hand-computed affinity weights, exact
propagation with colour-coded oracle features, and J&F with the first/last frames excluded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.eval import base
from dense_jax.core.sharding import make_mesh
from dense_jax.eval import features, video

P, H, W = 16, 64, 128  # 4 × 8 patches


def oracle_backbone(params, images):
    """One-hot of the object id written (as (id + 1) · 40) in each patch's red channel."""
    red = images[..., 0] * base.IMAGENET_STD[0] + base.IMAGENET_MEAN[0]
    ids = (jnp.round(red * 255 / 40) - 1).astype(jnp.int32)
    b, h, w = ids.shape
    onehot = jax.nn.one_hot(ids, 4).reshape(b, h // P, P, w // P, P, 4).mean((2, 4))
    return {"patch": onehot}


def clip(columns):
    """(T, 8) object ids per patch column -> frames (T, H, W, 3) and masks (T, H, W).

    Vertical bands: the bilinear ×P upsampling of a one-hot band map followed by argmax gives
    the band back exactly (a block object would get rounded corners, as in the reference)."""
    blocks = np.repeat(np.asarray(columns)[:, None, :], H // P, axis=1)
    masks = np.kron(blocks, np.ones((P, P), np.int64)).astype(np.uint8)
    frames = np.zeros(masks.shape + (3,), np.uint8)
    frames[..., 0] = (masks + 1) * 40
    return frames, masks


def static_columns(t=5):
    return np.asarray([[1, 1, 0, 2, 2, 0, 0, 1]] * t)


def moving_columns(t=5):
    """Objects 1 (two patches wide) and 2 (one patch) move right by one patch per frame."""
    out = np.zeros((t, 8), np.int64)
    for i in range(t):
        out[i, i : i + 2], out[i, i + 3] = 1, 2
    return out


@pytest.fixture
def ctx(tmp_path):
    c = base.make("davis", "davis", "demo")
    c.davis.update(dict(short_side=H, multiple=32, neighborhood=4, save_masks=True))
    c.input.batch_size = 8
    return features.EvalContext(oracle_backbone, {}, c, make_mesh((-1, 1)), str(tmp_path))


@pytest.mark.parametrize("columns", [static_columns(), moving_columns()], ids=["static", "moving"])
def test_propagation_reproduces_the_masks_exactly(ctx, columns, monkeypatch, tmp_path):
    frames, masks = clip(columns)
    monkeypatch.setattr(video, "open_videos", lambda _: [{"image": frames, "mask": masks, "id": "clip"}])
    with jax.set_mesh(ctx.mesh):
        pred = video.segment_video(ctx, frames, masks[0])
        result = video.run(ctx)
    np.testing.assert_array_equal(pred, masks)
    assert result["summary"] == {"j_and_f": 1.0, "j_mean": 1.0, "f_mean": 1.0}
    assert result["n_objects"] == 2
    assert (tmp_path / "davis" / "clip" / "00004.png").exists()
    assert (tmp_path / "davis_propagation.png").exists()


def test_affinity_top_k_neighbourhood_and_context_mask():
    """Target patch 0 of a 1×4 grid, radius 1: only source patches 0 and 1 of the valid
    context slots count; top-3 of exp(cos / 0.1) = e^9, e^8, e^7, normalised."""

    def unit(cos):
        return np.stack([cos, np.sqrt(1 - np.square(cos))], -1)

    target = unit(np.ones(4))
    ctx_feats = np.stack(
        [
            unit(np.array([0.9, 0.5, 1.0, 1.0])),  # slot 0: patches 2, 3 too far
            unit(np.array([0.8, 0.7, 1.0, 1.0])),  # slot 1
            unit(np.array([1.0, 1.0, 1.0, 1.0])),
        ]
    )  # slot 2: not yet filled
    segs = np.zeros((3, 4, 4), np.float32)
    segs[0, 0, 0] = segs[0, 1, 1] = segs[1, 0, 2] = segs[1, 1, 3] = 1.0
    near = video.neighbourhood(1, 4, 1).astype(np.float32)
    out = video.propagate(
        jnp.asarray(target, jnp.float32),
        jnp.asarray(ctx_feats, jnp.float32),
        jnp.asarray(segs),
        jnp.asarray([1.0, 1.0, 0.0]),
        jnp.asarray(near),
        topk=3,
        temperature=0.1,
    )
    e = np.exp([9.0, 8.0, 7.0])
    np.testing.assert_allclose(out[0], [e[0], 0.0, e[1], e[2]] / e.sum(), rtol=1e-5)


def test_target_size_as_dino():
    assert video.target_size(480, 854, 480, 64) == (480, 832)
    assert video.target_size(854, 480, 480, 64) == (832, 480)


def test_j_and_f_excludes_first_and_last_frames_and_void():
    gt = np.zeros((4, 32, 32), np.uint8)
    gt[:, 4:12, 4:12] = 1
    gt[:, 18:28, 18:28] = 2
    gt[:, 0:2, :] = 255  # void band
    pred = gt.copy()
    pred[:, 0:2, :] = 1  # predictions on void pixels are ignored
    pred[1][pred[1] == 2] = 0  # frame 1: object 2 missed; frame 2 perfect
    pred[3] = 0  # the last frame is never scored
    js, fs = video.j_and_f(pred, gt, bound_th=0.008)
    np.testing.assert_allclose(js, [1.0, 0.5])
    np.testing.assert_allclose(fs, [1.0, 0.5])
