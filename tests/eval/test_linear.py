"""Linear segmentation probe (evaluation.md §2, §8.7, §8.14)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs.eval import base
from dense_jax.eval import features, linear, metrics
from dense_jax.core.sharding import make_mesh

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
    return {"patch": onehot, "last_blocks": jnp.stack([onehot] * 4),
            "attn_cls": jnp.ones((b, 2, h // PATCH, w // PATCH))}


def block_config():
    c = base.make("linear", "voc", "demo")
    c.data.update(dict(num_classes=NUM_CLASSES, limit_train=48, limit_val=16))
    c.input.update(dict(size=GRID * PATCH, batch_size=16))
    c.linear.update(dict(label_size=16, eval_size=16, epochs=40, batch_size=16, lr=1.0,
                         milestones=(), augment=False))
    return c


@pytest.fixture
def block_sources(monkeypatch):
    sources = {"train": BlockSource(48, 0), "val": BlockSource(16, 1)}
    monkeypatch.setattr(features, "open_source", lambda data, split, limit=0: sources[split])
    return sources


def patch_oracle_miou(source, size):
    """§8.7's patch-majority oracle: bilinearly upsampled one-hot patch labels, argmax."""
    onehot = jax.nn.one_hot(source.labels, NUM_CLASSES)
    pred = np.asarray(jnp.argmax(features.bilinear_upsample(onehot, size), -1))
    gt = features.nearest_resize(np.stack([source[i]["mask"] for i in range(len(source))]), size)
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
    ctx = features.EvalContext(oracle_backbone, {}, c, make_mesh(c.mesh.shape))
    result = linear.run(ctx)
    oracle = patch_oracle_miou(block_sources["val"], c.linear.eval_size or c.input.size)
    print(variant, result["summary"], "oracle", oracle, "loss", result["epoch_loss"][-1])
    assert oracle > 0.9
    assert result["summary"]["miou"] == pytest.approx(oracle, abs=0.01)
    assert result["feature_dim"] == (8 if variant == "leopart" else 32)


def test_head_then_upsample_equals_upsample_then_head():
    """The reference upsamples tokens before the 1×1 conv; bilinear weights sum to 1, so it
    equals upsampling the logits (what linear.logits does)."""
    rng = np.random.default_rng(0)
    feats = jnp.asarray(rng.normal(size=(2, 5, 5, 7)), jnp.float32)
    head = linear.init_head(jax.random.key(0), 7, 3)
    ours = linear.logits(head, feats, 23)
    up = features.bilinear_upsample(feats, 23)
    ref = jnp.einsum("bhwd,dc->bhwc", up, head["kernel"], precision="highest") + head["bias"]
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_bilinear_upsample_matches_torch():
    x = np.random.default_rng(0).normal(size=(2, 7, 9, 3)).astype(np.float32)
    ours = np.asarray(features.bilinear_upsample(jnp.asarray(x), (30, 41)))
    ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(30, 41),
                                          mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5)


def test_nearest_resize_matches_torch():
    x = np.random.default_rng(0).integers(0, 50, size=(3, 448, 448)).astype(np.uint8)
    ours = features.nearest_resize(x, 100)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x[:, None].astype(np.float32)), size=(100, 100),
                                          mode="nearest")[:, 0].numpy()
    np.testing.assert_array_equal(ours, ref)
    ids = np.arange(28 * 28).reshape(1, 28, 28)
    ref = torch.nn.functional.interpolate(torch.from_numpy(ids[:, None].astype(np.float32)), size=(100, 100),
                                          mode="nearest")[:, 0].numpy()
    np.testing.assert_array_equal(features.nearest_resize(ids, 100), ref)


def test_bias_only_head_predicts_majority_and_ignore_has_no_gradient():
    """§8.14: constant features -> the majority class; ignore pixels never change the loss."""
    feats = jnp.zeros((4, 2, 2, 3))
    labels = jnp.asarray(np.random.default_rng(0).choice([0, 1, 1, 2], size=(4, 8, 8)), jnp.int32)
    valid = jnp.ones(4, bool)
    head = {"kernel": jnp.zeros((3, 3)), "bias": jnp.zeros(3)}
    grad = jax.grad(linear.loss_fn)
    for _ in range(300):
        head = jax.tree.map(lambda p, g: p - 0.5 * g, head, grad(head, feats, labels, valid, 3, 255))
    counts = np.bincount(np.asarray(labels).ravel(), minlength=3)
    assert int(jnp.argmax(head["bias"])) == int(np.argmax(counts))
    # Pixels labelled 255 and padded samples contribute nothing.
    rng = np.random.default_rng(1)
    feats = jnp.asarray(rng.normal(size=(4, 2, 2, 3)), jnp.float32)
    head = linear.init_head(jax.random.key(1), 3, 3)
    noisy = labels.at[:, :3].set(255)

    def manual(h):
        logp = jax.nn.log_softmax(linear.logits(h, feats, 8), -1)
        keep = noisy != 255
        picked = jnp.take_along_axis(logp, jnp.where(keep, noisy, 0)[..., None], -1)[..., 0]
        return -jnp.sum(picked * keep) / jnp.sum(keep)

    np.testing.assert_allclose(grad(head, feats, noisy, valid, 3, 255)["kernel"],
                               jax.grad(manual)(head)["kernel"], rtol=1e-5, atol=1e-7)
    padded = grad(head, feats.at[3].set(100.0), labels, valid.at[3].set(False), 3, 255)
    np.testing.assert_allclose(padded["bias"], grad(head, feats[:3], labels[:3], valid[:3], 3, 255)["bias"],
                               rtol=1e-5, atol=1e-7)


def test_sgd_step_schedule_matches_reference():
    """SGD(0.01, momentum 0.9, wd 1e-4) with ×0.1 at epoch 20 (torch StepLR), 10 steps/epoch."""
    c = base.make("linear", "voc")
    tx = linear.optimizer(c.linear, 10)
    p = {"w": jnp.ones(3)}
    state = tx.init(p)
    tp = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([tp], lr=0.01, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.1)
    rng = np.random.default_rng(0)
    for step in range(250):
        g = rng.normal(size=3).astype(np.float32)
        upd, state = tx.update({"w": jnp.asarray(g)}, state, p)
        p = jax.tree.map(lambda a, b: a + b, p, upd)
        opt.zero_grad()
        tp.grad = torch.from_numpy(g)
        opt.step()
        if (step + 1) % 10 == 0:
            sched.step()
    np.testing.assert_allclose(p["w"], tp.detach().numpy(), rtol=1e-5)


def test_train_item_shapes_and_flip_consistency():
    item = BlockSource(1, 0)[0]
    out = linear.train_item(item, np.random.default_rng(0), 64, 16, (0.8, 1.0), (3 / 4, 4 / 3), 1.0,
                            (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert out["image"].shape == (64, 64, 3) and out["mask"].shape == (16, 16)
    # Image and mask stay aligned through crop and flip: the red channel still encodes the label.
    red = out["image"][..., 0] * 255
    decoded = np.rint(red / 40).astype(int) - 1
    assert np.mean(features.nearest_resize(decoded, 16) == out["mask"]) > 0.8
