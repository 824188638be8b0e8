"""Linear segmentation probe (evaluation.md §2, §8.7, §8.14)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs.eval import base
from dense_jax.core.sharding import make_mesh
from dense_jax.eval import features, linear, metrics
from dense_jax.ops.resize import bilinear_upsample, nearest_resize
from dense_jax.train import loop

PATCH, GRID, NUM_CLASSES = 16, 4, 5


class BlockSource:
    """Images whose every 16×16 patch has one class, written in the red channel."""

    def __init__(self, n, seed):
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, NUM_CLASSES, size=(n, GRID, GRID))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        mask = np.kron(self.labels[i], np.ones((PATCH, PATCH), np.int64)).astype(np.uint8)
        image = np.zeros(mask.shape + (3,), np.uint8)
        image[..., 0] = (mask + 1) * 40
        return {"image": image, "mask": mask, "id": f"block_{i}"}


def oracle_backbone(params, images):
    """One-hot of the class encoded in each patch (the 'perfect features' of §8.7)."""
    red = images[..., 0] * base.IMAGENET_STD[0] + base.IMAGENET_MEAN[0]
    cls = (jnp.round(red * 255 / 40) - 1).astype(jnp.int32)
    b, h, w = cls.shape
    onehot = jax.nn.one_hot(cls, 8).reshape(b, h // PATCH, PATCH, w // PATCH, PATCH, 8).mean((2, 4))
    return {
        "patch": onehot,
        "last_blocks": jnp.stack([onehot] * 4),
        "attn_cls": jnp.ones((b, 2, h // PATCH, w // PATCH)),
    }


def block_config():
    c = base.make("linear", "voc", "demo")
    c.data.update(dict(num_classes=NUM_CLASSES, limit_train=48, limit_val=16))
    c.input.update(dict(size=GRID * PATCH, batch_size=16))
    c.linear.update(
        dict(label_size=16, eval_size=16, epochs=40, batch_size=16, lr=1.0, milestones=(), augment=False)
    )
    return c


@pytest.fixture
def block_sources(monkeypatch):
    sources = {"train": BlockSource(48, 0), "val": BlockSource(16, 1)}
    monkeypatch.setattr(features, "open_source", lambda data, split, limit=0: sources[split])
    return sources


def patch_oracle_miou(source, size):
    """§8.7's patch-majority oracle: bilinearly upsampled one-hot patch labels, argmax."""
    onehot = jax.nn.one_hot(source.labels, NUM_CLASSES)
    pred = np.asarray(jnp.argmax(bilinear_upsample(onehot, size), -1))
    gt = nearest_resize(np.stack([source[i]["mask"] for i in range(len(source))]), size)
    acc = metrics.ConfusionAccumulator(NUM_CLASSES)
    acc.update(pred, gt)
    return acc.result()["miou"]


@pytest.mark.parametrize("variant", ["leopart", "croc"])
def test_perfect_features_reach_the_oracle(block_sources, variant):
    """Perfect (one-hot) features: the probe reaches the patch-majority oracle (~100; only
    corner pixels where bilinear blending favours the two side neighbours are lost)."""
    c = block_config()
    c.linear.variant = variant
    if variant == "croc":
        c.linear.update(dict(optimizer="adam", lr=0.1, label_size=0, eval_size=0, weight_decay=0.0))
    ctx = features.EvalContext(oracle_backbone, {}, c, make_mesh(c.mesh.shape), fit=loop.fit)
    result = linear.run(ctx)
    oracle = patch_oracle_miou(block_sources["val"], c.linear.eval_size or c.input.size)
    print(variant, result["summary"], "oracle", oracle, "loss", result["epoch_loss"][-1])
    assert oracle > 0.9
    assert result["summary"]["miou"] == pytest.approx(oracle, abs=0.01)
    assert result["feature_dim"] == (8 if variant == "leopart" else 32)


def test_bilinear_upsample_matches_torch():
    x = np.random.default_rng(0).normal(size=(2, 7, 9, 3)).astype(np.float32)
    ours = np.asarray(bilinear_upsample(jnp.asarray(x), (30, 41)))
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x).permute(0, 3, 1, 2), size=(30, 41), mode="bilinear", align_corners=False
    ).permute(0, 2, 3, 1)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5)


def test_nearest_resize_matches_torch():
    x = np.random.default_rng(0).integers(0, 50, size=(3, 448, 448)).astype(np.uint8)
    ours = nearest_resize(x, 100)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x[:, None].astype(np.float32)), size=(100, 100), mode="nearest"
    )[:, 0].numpy()
    np.testing.assert_array_equal(ours, ref)
    ids = np.arange(28 * 28).reshape(1, 28, 28)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(ids[:, None].astype(np.float32)), size=(100, 100), mode="nearest"
    )[:, 0].numpy()
    np.testing.assert_array_equal(nearest_resize(ids, 100), ref)
