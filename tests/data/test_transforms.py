"""Multi-crop geometry (croc.md §2/§9.1, cribo.md §2, neco.md §1/§7.8) and eval transforms."""

import dataclasses
import math

import grain
import numpy as np
import pytest
from PIL import Image

from configs import dino_coco, neco_dinov2
from dense_jax.data import pipeline
from dense_jax.data import transforms as T


def _coordinate_image(height, width, kx, ky):
    """uint8 image whose R channel is kx·x and G channel ky·y (pixel-index coordinates)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([kx * xx, ky * yy, np.zeros_like(xx)], -1).astype(np.uint8)


def _recipe(config, **kw):
    """A training config's multi-crop recipe (``config.crops``), with fields replaced."""
    return dataclasses.replace(pipeline.crop_spec(config.get_config()), **kw)


def _dino(**kw):
    """DINO (COCO)'s crops at DINO's ImageNet global scale (0.4, 1): DataAugmentationDINO."""
    return _recipe(dino_coco, global_scale=(0.4, 1.0), **kw)


def _no_photometric(spec):
    n = spec.n_global
    return dataclasses.replace(
        spec,
        jitter_p=0.0,
        gray_p=0.0,
        global_blur_p=(0.0,) * n,
        local_blur_p=0.0,
        global_solarize_p=(0.0,) * n,
    )


def _decode(views, spec, kx, ky):
    """Normalised views → original-image (x, y) encoded by `_coordinate_image`."""
    rgb = (views * np.float32(spec.std) + np.float32(spec.mean)) * 255.0
    return rgb[..., :2] / np.float32([kx, ky])


def _bilinear(img, u, v):
    """Sample (H, W, C) at continuous frame position (u, v) (pixel centres at k + ½)."""
    x, y = u - 0.5, v - 0.5
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    x0, y0 = np.clip([x0, y0], 0, [img.shape[1] - 2, img.shape[0] - 2])
    top = (1 - fx) * img[y0, x0] + fx * img[y0, x0 + 1]
    bot = (1 - fx) * img[y0 + 1, x0] + fx * img[y0 + 1, x0 + 1]
    return (1 - fy) * top + fy * bot


# ---------------------------------------------------------------- sample_crop_box


def test_sample_crop_box_statistics_and_determinism():
    hw = (300, 400)
    for scale in [(0.25, 1.0), (0.05, 0.25)]:
        rng = np.random.default_rng(0)
        boxes = np.asarray([T.sample_crop_box(rng, hw, scale) for _ in range(2000)], float)
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        assert np.all(boxes[:, :2] >= 0)
        assert np.all(boxes[:, 2] <= 400) and np.all(boxes[:, 3] <= 300)
        area = w * h / (300 * 400)
        # w, h are rounded: allow the rounding's relative area error (≤ 1/w + 1/h)
        slack = 1.0 / w + 1.0 / h
        assert np.all(area >= scale[0] * (1 - slack)) and np.all(area <= scale[1] * (1 + slack))
        aspect = w / h
        assert np.all(aspect >= 0.75 * (1 - 1 / h)) and np.all(aspect <= 4 / 3 * (1 + 1 / w))
        # both ranges are covered (tries that do not fit are redrawn, so no uniformity check)
        span = scale[1] - scale[0]
        assert area.min() < scale[0] + 0.02 * span and area.max() > scale[1] - 0.1 * span
        assert aspect.min() < 0.78 and aspect.max() > 1.28
        assert len(set(boxes[:, 0])) > 100 and len(set(boxes[:, 1])) > 100  # positions vary

    a = [T.sample_crop_box(np.random.default_rng(7), hw, (0.25, 1.0)) for _ in range(3)]
    b = [T.sample_crop_box(np.random.default_rng(8), hw, (0.25, 1.0)) for _ in range(3)]
    assert a[0] == a[1] == a[2] and a[0] != b[0]
    assert all(isinstance(v, int) for v in a[0])


def test_sample_crop_box_fallback_is_torchvision_centre_crop():
    rng = np.random.default_rng(0)
    assert T.sample_crop_box(rng, (10, 1000), (0.9, 1.0)) == (493, 0, 506, 10)  # w=round(10·4/3)
    assert T.sample_crop_box(rng, (1000, 10), (0.9, 1.0)) == (0, 493, 10, 506)  # h=round(10·4/3)
    # fits the ratio: whole image whenever no try fits (scale > 1 never fits)
    assert T.sample_crop_box(rng, (300, 350), (1.5, 2.0)) == (0, 0, 350, 300)


# ---------------------------------------------------------------- patch positions


def test_patch_centers_croc_fixture():
    """croc.md §9 check 1: crop (i, j, h, w) = (10, 20, 150, 200) of a 300×400 image."""
    box = (20, 10, 220, 160)
    pos = T.patch_centers(box, False, 14)
    assert pos.shape == (196, 2) and pos.dtype == np.float32
    np.testing.assert_allclose(pos[0, 0], 20 + 0.5 * 200 / 14 - 0.5, atol=1e-4)  # 26.643
    np.testing.assert_allclose(pos[13 * 14, 1], 10 + 13.5 * 150 / 14 - 0.5, atol=1e-4)  # 154.143
    np.testing.assert_allclose(pos[1, 0] - pos[0, 0], 200 / 14, atol=1e-4)  # row-major
    flipped = T.patch_centers(box, True, 14)
    np.testing.assert_allclose(flipped[0, 0], 212.357, atol=1e-3)
    np.testing.assert_allclose(flipped[:, 1], pos[:, 1])
    batched = T.patch_centers(np.asarray([box, box]), np.asarray([False, True]), 14)
    np.testing.assert_array_equal(batched, np.stack([pos, flipped]))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize(
    "height,width,kx,ky,sizes",
    [
        (60, 84, 3, 4, (96, 64)),  # every crop is upscaled: fine coordinate encoding
        (180, 250, 1, 1, (64, 32)),  # downscaled (PIL antialias) crops
    ],
)
def test_views_contain_their_reported_pixels(interpolation, height, width, kx, ky, sizes):
    """Each view's pixels equal the original coordinates implied by its box and flip, and its
    patch means equal `patch_centers`. Tolerance: the uint8 encoding (½ level = 0.5/k px) plus,
    when downscaling by s = crop/size > 1, 0.1·s px for PIL's stretched (antialias) kernel,
    which reproduces a linear ramp only approximately. Pixels within 2 source pixels (or 2
    output pixels) of the crop edge are skipped: PIL clamps its kernel there."""
    spec = dataclasses.replace(
        _no_photometric(_dino(n_local=3, global_size=sizes[0], local_size=sizes[1])),
        interpolation=interpolation,
        patch_size=8,
    )
    image = _coordinate_image(height, width, kx, ky)
    transform = T.MultiCropTransform(spec)
    flips_seen = set()
    for seed in range(6):
        out = transform.random_map({"image": image}, np.random.default_rng(seed))
        np.testing.assert_array_equal(out["image_hw"], [height, width])
        for kind, size in zip(("global", "local"), sizes):
            coords = _decode(out[kind], spec, kx, ky)
            for view, box, flip, pos in zip(
                coords, out[f"{kind}_box"], out[f"{kind}_flip"], out[f"{kind}_pos"]
            ):
                flips_seen.add(bool(flip))
                x1, y1, x2, y2 = box
                down = max((x2 - x1) / size, (y2 - y1) / size)
                tol = 0.5 / min(kx, ky) + (0.1 * down if down > 1 else 0.0) + 2e-3
                cols = np.arange(size)[::-1] if flip else np.arange(size)
                ex = x1 + (cols + 0.5) * (x2 - x1) / size - 0.5
                ey = y1 + (np.arange(size) + 0.5) * (y2 - y1) / size - 0.5
                my = math.ceil(2 * max(size / (y2 - y1), 1.0))
                mx = math.ceil(2 * max(size / (x2 - x1), 1.0))
                inner = (slice(my, size - my), slice(mx, size - mx))
                assert np.abs(view[..., 0] - ex[None, :])[inner].max() <= tol
                assert np.abs(view[..., 1] - ey[:, None])[inner].max() <= tol
                g = size // 8
                means = view.reshape(g, 8, g, 8, 2).mean(axis=(1, 3)).reshape(-1, 2)
                np.testing.assert_allclose(means, pos, atol=tol, rtol=0)
    assert flips_seen == {False, True}


# ---------------------------------------------------------------- NeCo box records


def _neco_small(**kw):
    return _recipe(neco_dinov2, global_size=56, local_size=28, **kw)


def test_neco_box_records_map_to_the_same_region():
    spec = _neco_small()
    transform = T.MultiCropTransform(spec)
    sizes = np.asarray([56, 56, 28, 28, 28, 28], float)
    rng_img = np.random.default_rng(0)
    for seed in range(8):
        hw = tuple(int(v) for v in rng_img.integers(60, 200, 2))
        image = rng_img.integers(0, 256, hw + (3,)).astype(np.uint8)
        out = transform.random_map({"image": image, "id": seed}, np.random.default_rng(seed))
        assert out["id"] == seed
        assert out["global"].shape == (2, 56, 56, 3) and out["local"].shape == (4, 28, 28, 3)
        assert not out["global_flip"].any() and not out["local_flip"].any()
        gc, all_ = out["gc"], out["all"]
        assert gc.shape == (2, 6, 4) and all_.shape == (6, 2, 4) and gc.dtype == np.float32
        boxes = np.concatenate([out["global_box"], out["local_box"]]).astype(float)
        for g in range(2):
            np.testing.assert_allclose(gc[g, g], [0, 0, 56, 56], atol=1e-4)
            np.testing.assert_allclose(all_[g, g], [0, 0, 56, 56], atol=1e-4)
            for v in range(6):
                inter = np.concatenate(
                    [np.maximum(boxes[g, :2], boxes[v, :2]), np.minimum(boxes[g, 2:], boxes[v, 2:])]
                )
                for frame, rec in ((g, gc[g, v]), (v, all_[v, g])):
                    scale = np.tile((boxes[frame, 2:] - boxes[frame, :2]) / sizes[frame], 2)
                    back = boxes[frame, [0, 1, 0, 1]] + rec * scale  # invert crop+resize
                    np.testing.assert_allclose(back, inter, atol=1e-3)
        # overlap constraint: > int(1% HW) with every earlier global, 2% between globals
        area = hw[0] * hw[1]
        for i in range(1, 6):
            for g in range(min(i, 2)):
                wh = np.minimum(boxes[i, 2:], boxes[g, 2:]) - np.maximum(boxes[i, :2], boxes[g, :2])
                inter_area = np.prod(np.clip(wh, 0, None))
                assert inter_area > int(0.01 * area) * (2 if i < 2 else 1)


def test_neco_records_agree_on_pixels():
    """Invert the transforms through the pixels: the centre of gc[g, v] in view g and the
    centre of all[v, g] in view v show the same original coordinates (tolerance: two
    uint8 encodings of ≤ 0.17 px each, plus PIL's kernel near crop edges; measured ≤ 0.25)."""
    spec = _no_photometric(_neco_small())
    transform = T.MultiCropTransform(spec)
    kx, ky = 3, 4
    image = _coordinate_image(60, 84, kx, ky)
    for seed in range(5):
        out = transform.random_map({"image": image}, np.random.default_rng(seed))
        views = [*_decode(out["global"], spec, kx, ky), *_decode(out["local"], spec, kx, ky)]
        for g in range(2):
            for v in range(6):
                a, b = out["gc"][g, v], out["all"][v, g]
                pa = _bilinear(views[g], (a[0] + a[2]) / 2, (a[1] + a[3]) / 2)
                pb = _bilinear(views[v], (b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
                np.testing.assert_allclose(pa, pb, atol=0.4)


def test_intersection_boxes_degenerate_and_identity():
    a = np.asarray([[10, 20, 110, 70]], float)
    b = np.asarray([[10, 20, 110, 70], [200, 200, 220, 230], [60, 45, 160, 95]], float)
    in_a, in_b = T.intersection_boxes(a, 50, b, [50, 30, 40])
    np.testing.assert_allclose(in_a[0, 0], [0, 0, 50, 50])
    np.testing.assert_allclose(in_a[0, 2], [25, 25, 50, 50])
    np.testing.assert_allclose(in_b[2, 0], [0, 0, 20, 20])
    disjoint = in_a[0, 1]
    assert disjoint[2] == disjoint[0] and disjoint[3] == disjoint[1]  # zero-area box


def test_overlap_retry_is_capped_and_keeps_the_best(monkeypatch):
    """An unsatisfiable constraint stops after max_tries; the kept crop is the candidate with
    the largest minimum overlap (neco.md §8 fix)."""
    calls = []
    real = T.sample_crop_box

    def recording(rng, image_hw, scale, ratio):
        box = real(rng, image_hw, scale, ratio)
        calls.append(box)
        return box

    monkeypatch.setattr(T, "sample_crop_box", recording)
    spec = _neco_small(min_overlap=0.9, max_tries=5)
    out = T.MultiCropTransform(spec).random_map(
        {"image": np.zeros((90, 120, 3), np.uint8)}, np.random.default_rng(0)
    )
    assert len(calls) == 1 + 5 * 5
    chosen = np.concatenate([out["global_box"], out["local_box"]])
    for view in range(1, 6):
        cands = np.asarray(calls[1 + 5 * (view - 1) : 1 + 5 * view], float)
        prior = chosen[: min(view, 2)].astype(float)
        ov = np.asarray([T._intersection_area(c, prior).min() for c in cands])
        np.testing.assert_array_equal(chosen[view], cands[int(np.argmax(ov))])
    assert np.all(np.isfinite(out["gc"])) and np.all(out["gc"][..., 2:] >= out["gc"][..., :2])


# ---------------------------------------------------------------- pipeline plumbing


def test_multicrop_outputs_determinism_and_grain():
    spec = _dino(n_local=2, global_size=32, local_size=16)
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3)).astype(np.uint8)
    transform = T.MultiCropTransform(spec)
    a = transform.random_map({"image": image}, np.random.default_rng(3))
    b = transform.random_map({"image": image}, np.random.default_rng(3))
    assert set(a) == {"global", "global_box", "global_flip", "local", "local_box", "local_flip", "image_hw"}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["global"].shape == (2, 32, 32, 3) and a["global"].dtype == np.float32
    assert a["local_box"].shape == (2, 4) and a["global_flip"].dtype == bool
    croc = _recipe(dino_coco, global_size=32, patch_size=16)  # CrOC §2 = DINO (COCO)'s crops
    gray = T.MultiCropTransform(croc).random_map({"image": image[..., 0]}, np.random.default_rng(0))
    assert set(gray) == {"global", "global_box", "global_flip", "global_pos", "image_hw"}
    assert gray["global_pos"].shape == (2, 4, 2)

    ds = (
        grain.MapDataset.source([{"image": image}] * 4)
        .random_map(transform, seed=1)
        .batch(2, drop_remainder=True)
    )
    batch = ds[0]
    assert batch["global"].shape == (2, 2, 32, 32, 3) and batch["local_box"].shape == (2, 2, 4)
    assert not np.array_equal(batch["global"][0], batch["global"][1])


def test_photometric_ops_forced():
    """Grayscale gives equal channels; solarize inverts ≥128; jitter stays in range."""
    image = np.random.default_rng(1).integers(0, 256, (40, 40, 3)).astype(np.uint8)
    base = _no_photometric(_recipe(dino_coco, global_size=40, patch_size=8))
    spec = dataclasses.replace(base, ratio=(1.0, 1.0), global_scale=(1.0, 1.0), flip_p=0.0)
    plain = T.MultiCropTransform(spec).random_map({"image": image}, np.random.default_rng(0))
    rgb = np.rint((plain["global"][0] * np.float32(spec.std) + np.float32(spec.mean)) * 255)
    np.testing.assert_array_equal(rgb, image)  # full crop, same size: identity

    def run(**kw):
        s = dataclasses.replace(spec, **kw)
        v = T.MultiCropTransform(s).random_map({"image": image}, np.random.default_rng(0))
        return np.rint((v["global"] * np.float32(s.std) + np.float32(s.mean)) * 255)

    gray = run(gray_p=1.0)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    sol = run(global_solarize_p=(1.0, 1.0))
    np.testing.assert_array_equal(sol[0], np.where(image >= 128, 255 - image, image))
    jit = run(jitter_p=1.0)
    assert jit.min() >= 0 and jit.max() <= 255 and not np.array_equal(jit[0], image)
    blur = run(global_blur_p=(1.0, 1.0))
    roughness = np.abs(np.diff(image.astype(float), axis=0)).mean()
    assert np.abs(np.diff(blur[0], axis=0)).mean() < roughness
    bright = run(jitter_p=1.0, jitter=(0.4, 0.0, 0.0, 0.0))[0]  # brightness only: x·f
    ok = (image > 20) & (bright < 255)
    f = np.median(bright[ok] / image[ok])
    assert 0.6 <= f <= 1.4 and np.abs(bright - np.clip(np.rint(image * f), 0, 255)).max() <= 1


def test_hue_shift_direction():
    """torchvision's PIL hue: +1/3 turns red into green, −1/3 into blue."""
    red = Image.fromarray(np.full((2, 2, 3), (255, 0, 0), np.uint8))
    np.testing.assert_allclose(np.asarray(T._adjust_hue(red, 1 / 3))[0, 0], (0, 255, 0), atol=6)
    np.testing.assert_allclose(np.asarray(T._adjust_hue(red, -1 / 3))[0, 0], (0, 0, 255), atol=6)
    np.testing.assert_array_equal(np.asarray(T._adjust_hue(red, 0.0)), np.asarray(red))


def test_eval_transform():
    rng = np.random.default_rng(0)
    image = np.full((30, 50, 3), 128, np.uint8)
    mask = rng.integers(0, 5, (30, 50)).astype(np.int64)
    mask[0, 0] = 255
    img, m = T.eval_transform(image, mask, 20)
    assert img.shape == (20, 20, 3) and img.dtype == np.float32
    np.testing.assert_allclose(
        img[0, 0], (128 / 255 - np.asarray(T.IMAGENET_MEAN)) / np.asarray(T.IMAGENET_STD), atol=1e-6
    )
    assert m.shape == (20, 20) and m.dtype == np.int64 and set(np.unique(m)) <= set(np.unique(mask))
    img2, m2 = T.eval_transform(image, mask.astype(np.uint8), (60, 100))  # exact 2× upsample
    assert img2.shape == (60, 100, 3) and m2.dtype == np.uint8
    np.testing.assert_array_equal(m2[::2, ::2], mask.astype(np.uint8))
    np.testing.assert_array_equal(m2[1::2, 1::2], mask.astype(np.uint8))
    assert T.eval_transform(image, None, 8)[1] is None
