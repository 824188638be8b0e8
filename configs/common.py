"""Shared training defaults (architecture.md "configs"; jax-practices §1).

`base()` returns every field the trainer reads, with DINO's values (croc.md §1/§7,
cribo.md §1/§7); a paper config starts from it and overrides what differs, and adds its
method's own section (e.g. ``config.dino``). Everything the code reads has a default here,
so the code never calls ``config.get(key, default)``. `apply_variants` applies a config
file's named variants (``--config=path:a,b``); `demo_scenes`, `demo_schedule` and `smoke` are
the pieces its ``demo``/``smoke`` variants share.
"""

from __future__ import annotations

import ml_collections as mlc


def base() -> mlc.ConfigDict:
    """Defaults shared by every SSL config."""
    c = mlc.ConfigDict()
    c.method = "dino"
    c.seed = 0
    c.multihost = False  # call jax.distributed.initialize() in main() (TPU pods, SLURM)
    c.resume = ""  # checkpoint directory of another run: full state + data iterator
    # Backbone init, params only: a weights file (.pth/.safetensors/.npz) or another dense_jax
    # run's workdir/checkpoint directory (its latest teacher backbone).
    c.init_from = ""
    c.init_from_select = ""  # wrapper key inside a weights file ("teacher", "student"); "" = auto
    c.init_from_ignore = ()  # regexes of weights-file keys allowed to stay unused
    c.init_from_hint = ""  # shown when init_from is missing: what to run or download first

    # Backbone: `variant` names a registry entry; every other key overrides a
    # VisionTransformer attribute for the student (the teacher gets no stochastic depth).
    c.model = mlc.ConfigDict(dict(variant="dino_vits16", drop_path_rate=0.1, dtype="float32"))

    # Mesh ('data', 'model'); -1 takes the remaining devices. fsdp shards "embed" over 'data'.
    c.mesh = mlc.ConfigDict(dict(shape=(-1, 1), fsdp=False))

    c.data = mlc.ConfigDict(
        dict(
            source="folder",  # "scenes" | "folder" | "tfds" | "segmentation" (labelled readers)
            name="coco",  # the download hint of a missing folder; the reader of "segmentation"
            root="",  # folder datasets: directory holding `folders`
            folders=("train2017",),  # sub-folders listed recursively (flat or class layout)
            tfds_name="",  # tfds: builder name, e.g. "imagenet2012"
            tfds_data_dir="",  # tfds: data_dir ("" = TFDS default)
            split="train",
            num_examples=0,  # scenes: dataset size (0 = the split's default)
            image_size=(224, 224),  # scenes: rendered (H, W)
            scenes_style="learnable",  # scenes: "learnable" or "hard" (dense_jax/data/scenes.py)
            batch_size=256,  # global batch over all hosts
            workers=0,  # grain worker processes per host (0 = in-process)
            max_consecutive_bad=32,  # unreadable files skipped in a row before giving up
            # stop when more than max(1, this fraction of the dataset) distinct files are unreadable
            max_bad_fraction=0.01,
            masks=False,  # the source also yields each image's segmentation mask ("mask")
            # multi-crop: ship uint8 views + their photometric draws; the jitted step applies
            # jitter/grayscale/blur/solarize/normalisation on the device (data/photometric.py)
            device_photometric=False,
        )
    )

    # Multi-crop recipe: fields of dense_jax.data.transforms.MultiCropSpec.
    c.crops = mlc.ConfigDict(
        dict(
            n_global=2,
            global_size=224,
            global_scale=(0.25, 1.0),
            n_local=0,
            local_size=96,
            local_scale=(0.05, 0.4),
            patch_size=None,  # set (e.g. CrOC, CrIBo): also emit patch centres `<kind>_pos`
        )
    )

    # DINO optimisation (croc.md §7): lr is per 256 images, scaled by batch_size / 256.
    c.optim = mlc.ConfigDict(
        dict(
            lr=5e-4,
            scale_lr_by_batch=True,
            min_lr=1e-6,
            warmup_epochs=10,
            weight_decay=0.04,
            weight_decay_end=0.4,
            clip_grad=3.0,  # per-tensor norm clipping; 0 disables
            freeze_last_layer=1,  # epochs during which the "last_layer" group is not updated
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            name="adamw",  # "adamw" (DINO) | "sgd" | "adam" (coupled decay, the linear probes)
            sgd_momentum=0.9,
            schedule="cosine",  # "cosine" (DINO, warm-up + min_lr) | "steps" (× gamma per milestone)
            milestones=(),
            gamma=0.1,  # "steps": epochs at which the lr is multiplied by gamma
            power=0.9,  # "poly": (1 - step/total)^power from lr down to min_lr
            # Learning-rate factor per parameter group (labels from the method's param_groups).
            lr_scale=mlc.ConfigDict(dict(backbone=1.0, head=1.0, last_layer=1.0)),
        )
    )
    # EMA teacher (croc.md §3); ema=False: no teacher tree in the state (supervised methods).
    c.teacher = mlc.ConfigDict(dict(ema=True, momentum=0.996, momentum_end=1.0))

    c.train = mlc.ConfigDict(
        dict(
            epochs=100,
            steps_per_epoch=0,  # 0 = len(dataset) // batch_size (DINO's drop_last loader)
            max_steps=0,  # > 0: stop after this many steps (iteration-based recipes), else epochs
            log_every=50,
            record_batch_ids=False,  # write batch_ids.<process>.jsonl (reproducibility audits)
            profile_steps=(0, 0),  # (start, stop): jax.profiler trace of those steps in <workdir>/profile
        )
    )
    c.ckpt = mlc.ConfigDict(dict(every_steps=1000, keep=3, async_save=True))
    # Evaluations during training (dense_jax/eval/periodic.py), each at its own cadence:
    # c.evals.<name> = dict(config="configs/eval/<protocol>_<dataset>.py[:variants]", every=N)
    # runs on the EMA teacher's backbone (the student's without a teacher) every N steps (0:
    # at the end only) and at the last step; scores go to metrics.jsonl as eval/<name>/...
    c.evals = mlc.ConfigDict()
    return c


def segmentation_section(num_classes: int = 21, ignore_index: int = 255) -> mlc.ConfigDict:
    """``config.segmentation`` of the supervised segmentation method (methods/segmentation.py)."""
    return mlc.ConfigDict(
        dict(
            num_classes=num_classes,
            ignore_index=ignore_index,
            features="patch",  # "patch" (last block, normed) | "last_blocks" (n_blocks concatenated)
            n_blocks=4,
            head="linear",  # "linear" (1×1 conv) | "conv" (3×3 conv, BatchNorm, ReLU, 1×1 conv)
            conv_dim=256,
            feature_dim=0,  # head-only runs on precomputed features (model.variant=""): their width
            freeze_backbone=True,  # needs optim.lr_scale.backbone = 0
            label_size=0,  # loss resolution (0 = the crop size)
            crop_scale=(0.8, 1.0),
            crop_ratio=(3 / 4, 4 / 3),
            hflip=0.5,
            augment=True,  # False: squash to the crop size, no random crop or flip
        )
    )


def coco_train2017(c: mlc.ConfigDict, batch_size: int) -> None:
    """Train on the COCO train2017 images in ``data/coco`` (a folder dataset, 8 workers)."""
    c.data.update(
        dict(
            source="folder",
            name="coco",
            root="data/coco",
            folders=("train2017",),
            batch_size=batch_size,
            workers=8,
        )
    )


def demo_scenes(c: mlc.ConfigDict, batch_size: int) -> None:
    """Train on the built-in scenes that every ``:demo`` run shares (2048 images at 128², in-process)."""
    c.data.update(
        dict(
            source="scenes",
            name="scenes",
            workers=0,
            image_size=(128, 128),
            num_examples=2048,
            batch_size=batch_size,
        )
    )


def apply_variants(c: mlc.ConfigDict, arg: str | None, variants: dict) -> mlc.ConfigDict:
    """Apply the comma-separated variants named by ``arg`` to ``c`` in place, left to right.

    ``arg`` is the text after ':' in ``--config=path:arg``, e.g. "vitb14,paper"; None, "" and
    "default" add nothing. ``variants`` maps each name to a function that edits the config.
    """
    for name in (arg or "").split(","):
        name = name.strip()
        if name in ("", "default"):
            continue
        if name not in variants:
            raise ValueError(
                f"unknown config variant {name!r} in {arg!r}; known variants: "
                f"{', '.join(['default', *variants])} (comma-separated to combine)"
            )
        variants[name](c)
    return c


def demo_evaluations(c: mlc.ConfigDict, every: int = 0) -> None:
    """Score the teacher with the ``:demo`` linear probe, K-means and Hummingbird before
    training, every ``every`` steps (0: none between) and at its end; the CLI prints the
    before/after table (eval/periodic.py)."""
    for name in ("linear", "kmeans", "hbird"):
        c.evals[name] = dict(config=f"configs/eval/{name}_voc.py:demo", every=every, at_start=True)


def demo_schedule(c: mlc.ConfigDict, epochs: int) -> None:
    """The ``:demo`` runs' schedule: ``epochs`` epochs, logs every 8 steps, checkpoints every 32."""
    c.train.update(dict(epochs=epochs, log_every=8))
    c.ckpt.every_steps = 32


def smoke(c: mlc.ConfigDict, num_examples: int, ckpt_every: int) -> None:
    """Shrink a ``:demo`` config to the tests' seconds-long run: a 2-block ViT of width 32 on
    ``num_examples`` 48² scenes, batch 8, 32² globals + two 16² locals, 2 epochs, one log line
    per step, synchronous checkpoints every ``ckpt_every`` steps."""
    c.model.update(dict(embed_dim=32, depth=2, num_heads=2))
    c.data.update(dict(image_size=(48, 48), num_examples=num_examples, batch_size=8))
    c.crops.update(dict(global_size=32, n_local=2, local_size=16))
    c.train.update(dict(epochs=2, log_every=1))
    c.ckpt.update(dict(every_steps=ckpt_every, async_save=False))


def two_view_smoke(c: mlc.ConfigDict) -> None:
    """`smoke` for the two-view DINO-based methods (CrOC, CrIBo): 64 scenes, checkpoints every 4
    steps, no local crops, a small DINO head, the paper's frozen last layer in the first epoch
    (the tests check it) and no evaluations."""
    smoke(c, num_examples=64, ckpt_every=4)
    c.crops.n_local = 0  # smoke adds two locals
    c.dino.update(dict(out_dim=64, hidden_dim=32, bottleneck_dim=16))
    c.optim.freeze_last_layer = 1
    c.evals = mlc.ConfigDict()
