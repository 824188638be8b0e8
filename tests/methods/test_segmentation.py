"""Supervised segmentation method (methods/segmentation.py) and the trainer pieces it needs:
head-then-upsample exactness, ignored pixels, the torch SGD/StepLR recipe through the
trainer's optimizer, paired crops, and learning the scenes' labels through the trainer."""

import json

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest
import torch

from configs import common
from dense_jax.core.schedules import Schedules
from dense_jax.data.paired import SegmentationCrops
from dense_jax.methods import segmentation
from dense_jax.ops.resize import bilinear_upsample, nearest_resize
from dense_jax.train import loop, optim


def head_params(key, dim, classes):
    return segmentation.LinearHead(classes).init(key, jnp.zeros((1, 1, 1, dim)))["params"]


def head_config(dim, classes):
    c = mlc.ConfigDict({"model": {"variant": ""}, "segmentation": common.segmentation_section(classes)})
    c.segmentation.feature_dim = dim
    return c


def test_head_then_upsample_equals_upsample_then_head():
    """The reference upsamples tokens before the 1×1 conv; bilinear weights sum to 1, so it
    equals upsampling the logits (what the method does)."""
    rng = np.random.default_rng(0)
    feats = jnp.asarray(rng.normal(size=(2, 5, 5, 7)), jnp.float32)
    head = head_params(jax.random.key(0), 7, 3)
    ours = segmentation.predict({"head": head}, {}, {"feats": feats}, head_config(7, 3), 23)["logits"]
    up = bilinear_upsample(feats, 23)
    k = head["classifier"]
    ref = jnp.einsum("bhwd,dc->bhwc", up, k["kernel"], precision="highest") + k["bias"]
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    bound = 1 / np.sqrt(7)  # PyTorch Conv2d default init
    assert np.abs(k["kernel"]).max() <= bound and np.abs(k["bias"]).max() <= bound


def test_bias_only_head_predicts_majority_and_ignore_has_no_gradient():
    """§8.14: constant features -> the majority class; ignore pixels never change the loss."""
    labels = jnp.asarray(np.random.default_rng(0).choice([0, 1, 1, 2], size=(4, 8, 8)), jnp.int32)

    def loss(head, feats, y):
        logits = segmentation.predict({"head": head}, {}, {"feats": feats}, head_config(3, 3), 8)["logits"]
        return segmentation.pixel_loss(logits, y, 3, 255)[0]

    grad = jax.grad(loss)
    head = {"classifier": {"kernel": jnp.zeros((3, 3)), "bias": jnp.zeros(3)}}
    for _ in range(300):
        head = jax.tree.map(lambda p, g: p - 0.5 * g, head, grad(head, jnp.zeros((4, 2, 2, 3)), labels))
    counts = np.bincount(np.asarray(labels).ravel(), minlength=3)
    assert int(jnp.argmax(head["classifier"]["bias"])) == int(np.argmax(counts))
    feats = jnp.asarray(np.random.default_rng(1).normal(size=(4, 2, 2, 3)), jnp.float32)
    head = head_params(jax.random.key(1), 3, 3)
    noisy = labels.at[:, :3].set(255)

    def manual(h):
        logits = segmentation.predict({"head": h}, {}, {"feats": feats}, head_config(3, 3), 8)["logits"]
        logp = jax.nn.log_softmax(logits, -1)
        keep = noisy != 255
        picked = jnp.take_along_axis(logp, jnp.where(keep, noisy, 0)[..., None], -1)[..., 0]
        return -jnp.sum(picked * keep) / jnp.sum(keep)

    np.testing.assert_allclose(
        grad(head, feats, noisy)["classifier"]["kernel"],
        jax.grad(manual)(head)["classifier"]["kernel"],
        rtol=1e-5,
        atol=1e-7,
    )


def test_sgd_step_schedule_matches_torch():
    """The trainer's optim.name=sgd + schedule=steps is torch SGD(0.01, momentum 0.9, wd 1e-4)
    with StepLR ×0.1 at epoch 20 (10 steps per epoch), as the §2a probe trains."""
    c = common.base()
    c.optim.update(
        dict(
            name="sgd",
            lr=0.01,
            scale_lr_by_batch=False,
            weight_decay=1e-4,
            weight_decay_end=1e-4,
            schedule="steps",
            milestones=(20,),
            gamma=0.1,
            clip_grad=0.0,
            freeze_last_layer=0,
        )
    )
    c.train.update(dict(epochs=25, steps_per_epoch=10))
    schedules = Schedules(c)
    tx = optim.build(c, {"w": "head"})
    p = {"w": jnp.ones(3)}
    state = tx.init(p)
    tp = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([tp], lr=0.01, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.1)
    rng = np.random.default_rng(0)
    for step in range(250):
        g = rng.normal(size=3).astype(np.float32)
        upd, state = tx.update(
            {"w": jnp.asarray(g)},
            state,
            p,
            lr=schedules.lr(step),
            wd=schedules.weight_decay(step),
            freeze=False,
        )
        p = optax.apply_updates(p, upd)
        opt.zero_grad()
        tp.grad = torch.from_numpy(g)
        opt.step()
        if (step + 1) % 10 == 0:
            sched.step()
    np.testing.assert_allclose(p["w"], tp.detach().numpy(), rtol=1e-5)


def test_paired_crops_keep_image_and_mask_aligned():
    labels = np.random.default_rng(0).integers(0, 5, size=(4, 4))
    mask = np.kron(labels, np.ones((16, 16), np.int64)).astype(np.uint8)
    image = np.zeros(mask.shape + (3,), np.uint8)
    image[..., 0] = (mask + 1) * 40
    crops = SegmentationCrops(size=64, label_size=16, hflip=1.0, mean=(0.0,) * 3, std=(1.0,) * 3)
    out = crops.random_map({"image": image, "mask": mask, "id": "x", "index": 3}, np.random.default_rng(0))
    assert set(out) == {"image", "mask", "index"}
    assert out["image"].shape == (64, 64, 3) and out["mask"].shape == (16, 16)
    decoded = np.rint(out["image"][..., 0] * 255 / 40).astype(int) - 1
    assert np.mean(nearest_resize(decoded, 16) == out["mask"]) > 0.8


def scenes_config(head: str, steps: int):
    """The segmentation method on the built-in scenes with masks (vit_demo16 at 64 px)."""
    c = common.base()
    c.method = "segmentation"
    c.mesh.shape = (-1, 1)
    c.model = mlc.ConfigDict(dict(variant="vit_demo16", drop_path_rate=0.0, dtype="float32"))
    common.demo_scenes(c, batch_size=16)
    c.data.update(dict(masks=True, image_size=(64, 64), num_examples=256))
    c.crops.global_size = 64
    c.teacher.ema = False
    c.segmentation = common.segmentation_section(num_classes=9)
    c.segmentation.update(dict(head=head, freeze_backbone=False, label_size=16, crop_scale=(0.5, 1.0)))
    c.optim.update(
        dict(
            lr=1e-3,
            scale_lr_by_batch=False,
            warmup_epochs=0,
            min_lr=1e-3,
            weight_decay=0.0,
            weight_decay_end=0.0,
            freeze_last_layer=0,
        )
    )
    c.train.update(dict(epochs=1, steps_per_epoch=steps, log_every=steps // 4))
    c.ckpt.update(dict(every_steps=10**6, async_save=False))
    return c


@pytest.mark.parametrize("head", ["linear", "conv"])
def test_learns_the_scene_labels_through_the_trainer(tmp_path, head):
    """Fine-tuned backbone + head on the scenes' masks: the loss falls and the pixel accuracy
    rises well above its start; the conv head's BatchNorm statistics move (model_state)."""
    config = scenes_config(head, steps=48)
    state = loop.train(config, segmentation, str(tmp_path))
    with open(tmp_path / "metrics.jsonl") as f:
        records = [r for r in map(json.loads, f) if "loss" in r]  # step records
    first, last = records[0], records[-1]
    print(head, [(r["step"], round(r["loss"], 3), round(r["pixel_accuracy"], 3)) for r in records])
    assert last["loss"] < 0.9 * first["loss"]
    assert last["pixel_accuracy"] > first["pixel_accuracy"] + 0.05
    assert state.teacher == {}
    if head == "conv":
        mean = np.asarray(state.model_state["head"]["batch_stats"]["bn"]["mean"])
        assert np.abs(mean).max() > 1e-3
    else:
        assert state.model_state == {}
