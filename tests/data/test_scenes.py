"""Tests for the procedural scenes dataset (dense_jax/data/scenes.py)."""

import grain
import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dense_jax.data import scenes, sources
from dense_jax.data.scenes import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    STUFF_CLASSES,
    THING_CLASSES,
    ScenesConfig,
    ScenesSource,
    render_scene,
)


def _cfg(size, **kw):
    return ScenesConfig(image_size=size, **kw)


def test_class_constants():
    assert NUM_CLASSES == len(CLASS_NAMES) == 9
    assert sorted(THING_CLASSES + STUFF_CLASSES) == list(range(NUM_CLASSES))
    assert 0 in THING_CLASSES and IGNORE_INDEX == 255


def test_deterministic_and_distinct():
    cfg = _cfg((64, 64))
    a, b = render_scene(5, "train", cfg), render_scene(5, "train", cfg)
    assert a["index"] == 5
    assert a["image"].tobytes() == b["image"].tobytes()
    assert a["mask"].tobytes() == b["mask"].tobytes()
    others = [
        render_scene(6, "train", cfg),
        render_scene(5, "val", cfg),
        render_scene(5, "train", _cfg((64, 64), seed=1)),
    ]
    for o in others:
        assert not np.array_equal(o["image"], a["image"])
        assert not np.array_equal(o["mask"], a["mask"])


@pytest.mark.parametrize("size", [(96, 96), (98, 130), (518, 392), (1, 3)])
def test_any_size(size):
    s = render_scene(11, "val", _cfg(size))
    assert s["image"].shape == (*size, 3) and s["image"].dtype == np.uint8
    assert s["mask"].shape == size and s["mask"].dtype == np.uint8
    allowed = set(range(NUM_CLASSES)) | {IGNORE_INDEX}
    assert set(np.unique(s["mask"]).tolist()) <= allowed


def test_same_scene_at_every_size():
    """Geometry is in normalised coordinates: a half-size render matches a subsampled one."""
    for i in range(4):
        big = render_scene(i, "val", _cfg((224, 224)))["mask"][::2, ::2]
        small = render_scene(i, "val", _cfg((112, 112)))["mask"]
        valid = (big != IGNORE_INDEX) & (small != IGNORE_INDEX)
        assert (big == small)[valid].mean() > 0.99


def test_ignore_band_width():
    def ignored(width):
        cfg = _cfg((128, 128), ignore_border=width)
        masks = [render_scene(i, "train", cfg)["mask"] for i in range(8)]
        return np.mean([(m == IGNORE_INDEX).mean() for m in masks])

    assert ignored(0) == 0.0
    one, three = ignored(1), ignored(3)
    assert 0.005 < one < 0.1
    assert 2.4 < three / one < 3.3  # the band grows linearly with its width


def _class_stats(style, scenes_count=400):
    """Per-scene mean RGB of each class present, pixel counts per class, visible objects."""
    cfg = _cfg((64, 64), style=style)
    class_colours = [[] for _ in range(NUM_CLASSES)]
    pixels = np.zeros(NUM_CLASSES, np.int64)
    for i in range(scenes_count):
        image, mask, instances = scenes._render(i, "train", cfg)
        valid = mask != IGNORE_INDEX
        visible = np.bincount(instances[valid], minlength=cfg.max_objects + 1)[1:]
        assert cfg.min_objects <= (visible >= 0.003 * mask.size).sum() <= cfg.max_objects, i
        assert np.isin(mask, THING_CLASSES).any(), i
        assert (~valid).mean() < 0.15, i
        pixels += np.bincount(mask[valid], minlength=NUM_CLASSES)
        for k in np.unique(mask[valid]):
            class_colours[k].append(image[mask == k].mean(0))
    return class_colours, pixels


def _colour_spread(class_colours):
    """Largest gap between class mean colours, relative to the within-class spread."""
    means = np.array([np.mean(c, 0) for c in class_colours])  # (classes, RGB)
    within_std = np.mean([np.std(c, 0) for c in class_colours])
    return np.abs(means[:, None] - means[None]).max() / within_std


def test_hard_style_objects_classes_and_colour():
    """Hard style, 400 scenes: >= 2 visible objects each, every class appears, colour is
    class-blind (class mean colours within 0.35 of the within-class spread)."""
    class_colours, _ = _class_stats("hard")
    counts = [len(c) for c in class_colours]
    assert min(counts) >= 40, counts
    ratio = _colour_spread(class_colours)
    print(f"\nhard: class mean RGB max pairwise diff / within-class std {ratio:.2f}; counts {counts}")
    assert ratio < 0.35


def test_learnable_style_proportions_and_colour_priors():
    """Learnable style, 400 scenes: >= 1 visible object each, things and stuff in the expected
    pixel shares (every thing class 2-10 % of the valid pixels, every stuff class 18-32 %),
    and class-typical colours: class mean colours differ by more than the within-class spread."""
    class_colours, pixels = _class_stats("learnable")
    share = pixels / pixels.sum()
    print(f"\nlearnable: pixel share per class {np.round(share, 3).tolist()}")
    assert all(0.02 < share[k] < 0.1 for k in THING_CLASSES), share
    assert all(0.18 < share[k] < 0.32 for k in STUFF_CLASSES), share
    ratio = _colour_spread(class_colours)
    print(f"learnable: class mean RGB max pairwise diff / within-class std {ratio:.2f}")
    assert ratio > 2.0


def test_min_objects_respected():
    cfg = _cfg((64, 64), min_objects=5, max_objects=5)
    for i in range(20):
        _, mask, instances = scenes._render(i, "val", cfg)
        assert instances.max() == 5


# --------------------------------------------------------------------- learnability

PATCH = 16


def _patches(split, num_images, per_class, seed, style):
    """Class-balanced 16x16 patches, each >= 80% one class (the centre pixel's)."""
    rng = np.random.default_rng(seed)
    cfg = _cfg((128, 128), style=style)
    xs, ys = [], []
    counts = np.zeros(NUM_CLASSES, int)
    for i in range(num_images):
        s = render_scene(i, split, cfg)
        for r in range(0, 128 - PATCH + 1, 4):
            for c in range(0, 128 - PATCH + 1, 4):
                m = s["mask"][r : r + PATCH, c : c + PATCH]
                k = m[PATCH // 2, PATCH // 2]
                if k == IGNORE_INDEX or counts[k] >= per_class or (m == k).mean() < 0.8:
                    continue
                if rng.random() < 0.15:
                    counts[k] += 1
                    xs.append(s["image"][r : r + PATCH, c : c + PATCH].astype(np.float32))
                    ys.append(k)
    assert counts.min() == per_class, counts
    return np.stack(xs), np.array(ys)


def _texture_features(patches):
    """Colour-blind texture statistics: project each patch on its main colour axis, then
    radial / angular power spectrum, value histogram and gradient energy."""
    fy, fx = np.fft.fftfreq(PATCH)[:, None], np.fft.fftfreq(PATCH)[None, :]
    radial_bin = np.digitize(np.hypot(fx, fy), [0.1, 0.2, 0.3, 0.4, 0.5])
    angle_bin = np.minimum((np.mod(np.arctan2(fy, fx), np.pi) / np.pi * 8).astype(int), 7)
    feats = []
    for p in patches:
        x = p.reshape(-1, 3) - p.reshape(-1, 3).mean(0)
        g = (x @ np.linalg.svd(x, full_matrices=False)[2][0]).reshape(PATCH, PATCH)
        g = g / (g.std() + 1e-6)
        power = np.abs(np.fft.fft2(g)) ** 2
        power[0, 0] = 0
        power /= power.sum() + 1e-6
        radial = [power[radial_bin == b].sum() for b in range(6)]
        angular = np.sort([power[angle_bin == b].sum() for b in range(8)])[::-1][:3]
        hist = np.histogram(g, bins=6, range=(-2.5, 2.5))[0] / g.size
        gy, gx = np.gradient(g)
        feats.append(np.concatenate([radial, angular, hist, [np.hypot(gx, gy).mean()]]))
    return np.array(feats)


def _patch_accuracy(style):
    """Val patch accuracy of logistic regressions on (texture statistics, mean colour, both)."""
    x_train, y_train = _patches("train", 80, 40, seed=0, style=style)
    x_test, y_test = _patches("val", 60, 25, seed=1, style=style)

    def accuracy(f_train, f_test):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        return clf.fit(f_train, y_train).score(f_test, y_test)

    texture = (_texture_features(x_train), _texture_features(x_test))
    colour = (x_train.mean((1, 2)), x_test.mean((1, 2)))
    both = tuple(np.concatenate([t, c], 1) for t, c in zip(texture, colour))
    return accuracy(*texture), accuracy(*colour), accuracy(*both)


def test_hard_style_texture_beats_colour():
    """Hard style: the class is learnable from colour-blind texture features, not from colour."""
    texture, colour, _ = _patch_accuracy("hard")
    chance = 1 / NUM_CLASSES
    print(f"\nhard patch accuracy: texture {texture:.3f}, mean colour {colour:.3f}, chance {chance:.3f}")
    assert texture > 0.6
    assert colour < chance + 0.08


def test_learnable_style_colour_helps_but_does_not_decide():
    """Learnable style: mean colour alone is an informative but unreliable cue (overlapping
    priors), texture alone is informative too, and colour and texture together beat either."""
    texture, colour, both = _patch_accuracy("learnable")
    print(f"\nlearnable patch accuracy: texture {texture:.3f}, mean colour {colour:.3f}, both {both:.3f}")
    assert 0.35 < colour < 0.75
    assert texture > 0.4  # chance 0.11; these 16-pixel statistics see about one period
    assert both > max(texture, colour) + 0.03


# --------------------------------------------------------------------- source and docs


def test_grain_source():
    cfg = _cfg((48, 64))
    src = ScenesSource("val", 20, cfg)
    assert len(src) == 20 and len(ScenesSource("train")) == 10_000
    item = grain.MapDataset.source(src)[3]
    want = render_scene(3, "val", cfg)
    assert item["index"] == 3
    np.testing.assert_array_equal(item["image"], want["image"])
    np.testing.assert_array_equal(item["mask"], want["mask"])
    with pytest.raises(IndexError):
        src[20]
    with pytest.raises(ValueError):
        ScenesSource("test")


def test_render_grid(tmp_path):
    path = tmp_path / "grid.png"
    scenes.render_grid(str(path), rows=1, cols=2, size=(32, 40))
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.width == 2 * (2 * 40 + 12)


@pytest.mark.parametrize("style", ["learnable", "hard"])
def test_video_masks_move_with_objects(style):
    """The DAVIS-like scenes videos: a camera panning `shift` pixels per frame, so every frame's
    image and object ids are frame 0's moved left by shift * t; objects are thing class + 1."""
    video = sources.Scenes("val", 3, (48, 64), frames=4, shift=5, style=style)[1]
    images, ids = video["image"], video["mask"]
    assert images.shape == (4, 48, 64, 3) and ids.shape == (4, 48, 64)
    for t in range(1, 4):
        np.testing.assert_array_equal(ids[t][:, : 64 - 5 * t], ids[0][:, 5 * t :])
        np.testing.assert_array_equal(images[t][:, : 64 - 5 * t], images[0][:, 5 * t :])
        assert not np.array_equal(ids[t], ids[0])
    objects = set(np.unique(ids).tolist()) - {0, IGNORE_INDEX}
    assert objects and objects <= {k + 1 for k in THING_CLASSES}
