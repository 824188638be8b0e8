"""COMUS self-training (Alg. 2; comus.md §6, §8 row "DeepLabv3"): a segmentation network on the
pseudo-masks, trained by the one trainer through the ``segmentation`` method, then used as the
teacher that labels the next split.

The reference trains a torchvision DeepLabv3-ResNet50 (DINO init), which has no offline weights;
the plan of §8 puts the head on the same DINO ViT instead: ``self_train.head="conv"`` (default,
the backbone fine-tuned at ``backbone_lr_scale`` × the head's lr; the decoder is the method's
3×3 conv → BN → ReLU → 1×1, one block where the spec sketches two) or ``"linear"`` with a frozen
backbone (cheap). Everything else follows the code: K + 1 outputs, plain per-pixel
cross-entropy over every pixel (background 0 is a class, no ignore label), Adam(6e-5) with
default betas, no weight decay, constant lr, ``RandomResizedCrop(input_size, scale, ratio
(3/4, 4/3))`` (image bilinear, mask nearest; a scale above 1 falls back to the whole-image crop
after 10 tries, as albumentations) + horizontal flip, batch 56, epochs per round (``range(0,
n_epochs + 1)`` in the code: VOC 10 then 5). Each round trains a fresh network (DINO backbone,
new head), never warm-started from the teacher.

Teacher labels (§6): each image squashed to ``input_size``², argmax of the logits, then nearest
to the original size; no threshold, CRF or TTA.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dense_jax.core.sharding import to_host
from dense_jax.data.transforms import eval_transform
from dense_jax.methods import segmentation
from dense_jax.ops.resize import nearest_resize


def segmentation_config(config: mlc.ConfigDict, round_index: int) -> mlc.ConfigDict:
    """The ``segmentation`` method's training config of self-training round ``round_index``
    (1-based): ``config.trainer`` (the shared training defaults) with ``config.self_train``'s
    recipe, ``config.model`` and K + 1 classes filled in."""
    st = config.self_train
    c = mlc.ConfigDict(config.trainer.to_dict())
    c.method, c.seed = "segmentation", config.seed + round_index
    c.mesh.shape = tuple(config.mesh.shape)
    c.teacher.ema = False
    c.init_from = ""  # the pipeline hands the backbone to the trainer (a fresh copy each round)
    c.model = mlc.ConfigDict({**config.model.to_dict(), "drop_path_rate": st.drop_path_rate})
    c.crops.global_size = st.input_size
    frozen = st.head == "linear"
    c.segmentation.update(
        dict(
            num_classes=config.discovery.n_clusters + 1,
            ignore_index=255,
            features="patch",
            head=st.head,
            conv_dim=st.conv_dim,
            freeze_backbone=frozen,
            label_size=st.label_size,
            crop_scale=tuple(st.crop_scale),
            crop_ratio=(3 / 4, 4 / 3),
            hflip=0.5,
            augment=True,
        )
    )
    c.optim.update(
        dict(
            name="adam",
            lr=st.lr,
            scale_lr_by_batch=False,
            min_lr=st.lr,  # constant: cosine from lr to lr
            warmup_epochs=0,
            weight_decay=0.0,
            weight_decay_end=0.0,
            clip_grad=0.0,
            freeze_last_layer=0,
            schedule="cosine",
        )
    )
    c.optim.lr_scale = mlc.ConfigDict(
        dict(backbone=0.0 if frozen else st.backbone_lr_scale, head=1.0, last_layer=1.0)
    )
    c.data.update(dict(batch_size=st.batch_size, workers=st.workers))
    c.train.update(dict(epochs=st.epochs[round_index - 1], steps_per_epoch=0, max_steps=0))
    c.train.log_every = st.log_every
    c.ckpt.update(dict(every_steps=st.ckpt_every, keep=1, async_save=False))
    return c


def make_labeller(seg_config: mlc.ConfigDict, mesh, batch_size: int):
    """A function ``(state, images uint8 list) -> list of uint8 (H, W) argmax labels`` of the
    trained network (§6 teacher labels; also the evaluation's predictions), jitted once with the
    batch split over ``'data'``."""
    size = seg_config.crops.global_size
    sharding = NamedSharding(mesh, P("data"))
    bs = -(-batch_size // mesh.shape["data"]) * mesh.shape["data"]

    @jax.jit
    def argmax(params, model_state, images):
        logits = segmentation.predict(params, model_state, {"image": images}, seg_config, size)["logits"]
        return jnp.argmax(logits, axis=-1).astype(jnp.uint8)

    def label(state, images) -> list[np.ndarray]:
        batch = np.zeros((bs, size, size, 3), np.float32)
        batch[: len(images)] = [eval_transform(im, size=size)[0] for im in images]
        with jax.set_mesh(mesh):
            pred = to_host(argmax(state.params, state.model_state, jax.device_put(batch, sharding)))
        return [np.asarray(nearest_resize(p, im.shape[:2])) for p, im in zip(pred, images)]

    label.batch_size = bs
    return label
