"""Shared defaults of the evaluation configs (jax-practices §1; evaluation.md).

`make(protocol, dataset, arg)` returns a complete config: every field any protocol driver
reads exists here, so the code never guesses defaults and ``--config.<typo>`` fails. A
protocol config (``configs/eval/<protocol>_<dataset>.py``) calls it, overrides what differs,
then applies the comma-separated variants named after ':' (``path:a,b`` applies a then b; see
`configs.common.apply_variants`) from its ``VARIANTS``, which start from these:

  demo  built-in scenes with a tiny backbone and small sizes (CPU, well under a minute); without
        ``--config.weights`` the backbone is randomly initialised

Command pattern::

    python -m dense_jax.evaluate --config=configs/eval/linear_voc.py --workdir=DIR \\
        --config.weights=dino_deitsmall16_pretrain.pth --config.data.root=data/VOCdevkit
    python -m dense_jax.evaluate --config=configs/eval/linear_voc.py:demo --workdir=/tmp/ev \\
        [--config.weights=workdirs/dino_demo]        # a dense_jax training workdir
"""

from __future__ import annotations

import ml_collections as mlc

from configs import common, cribo_coco, croc_coco

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name, root, train split, val split, classes, ignore index, background class ids (CBFE).
DATASETS = {
    "voc": dict(
        name="voc",
        root="data/VOCdevkit",
        train_split="trainaug",
        val_split="val",
        num_classes=21,
        ignore_index=255,
        background=(0,),
    ),
    "coco_things": dict(
        name="coco_things",
        root="data/coco",
        train_split="train10",
        val_split="val",
        num_classes=12,
        ignore_index=255,
        background=(),
    ),
    "coco_stuff": dict(
        name="coco_stuff",
        root="data/coco",
        train_split="train10",
        val_split="val",
        num_classes=15,
        ignore_index=255,
        background=(),
    ),
    "coco_stuff164k": dict(
        name="coco_stuff164k",
        root="data/coco",
        train_split="train",
        val_split="val",
        num_classes=171,
        ignore_index=255,
        background=(),
    ),
    "pascal_context": dict(
        name="pascal_context",
        root="data/VOCdevkit",
        train_split="train",
        val_split="val",
        num_classes=59,
        ignore_index=255,
        background=(),
    ),
    "ade": dict(
        name="ade",
        root="data/ADEChallengeData2016",
        train_split="train",
        val_split="val",
        num_classes=151,
        ignore_index=0,
        background=(),
    ),
    "davis": dict(
        name="davis",
        root="data/DAVIS",
        train_split="train",
        val_split="val",
        num_classes=0,
        ignore_index=255,
        background=(),
    ),
    # Built-in procedural scenes: 9 classes, stuff (6, 7, 8) acts as background for CBFE.
    "scenes": dict(
        name="scenes",
        root="",
        train_split="train",
        val_split="val",
        num_classes=9,
        ignore_index=255,
        background=(6, 7, 8),
        scenes_style="learnable",  # or "hard": class-blind colours (dense_jax/data/scenes.py)
    ),
}


def make(protocol: str, dataset: str, arg: str | None = None, variants: dict | None = None) -> mlc.ConfigDict:
    """Full evaluation config of ``protocol`` on ``dataset`` with the ``variants`` (default
    `VARIANTS`) named in ``arg`` applied."""
    c = mlc.ConfigDict()
    c.protocols = (protocol,)
    c.weights = ""  # weight file | dense_jax training workdir | "" = random init
    c.weights_select = ""  # wrapper key inside a weight file ("teacher", ...); "" = auto
    c.seed = 0
    c.cache_dir = ""  # npz cache of un-augmented features ("" = off)
    c.model = mlc.ConfigDict(dict(variant="dino_vits16", dtype="float32", n_last_blocks=4))
    c.mesh = mlc.ConfigDict(dict(shape=(-1, 1)))
    # allow_missing: evaluate the rest when listed samples cannot be used (else stop, naming them)
    c.data = mlc.ConfigDict(
        dict(DATASETS[dataset], limit_train=0, limit_val=0, image_size=(128, 128), allow_missing=False)
    )
    c.input = mlc.ConfigDict(dict(size=448, batch_size=64, workers=0, mean=IMAGENET_MEAN, std=IMAGENET_STD))
    c.output = mlc.ConfigDict(dict(n_show=4))  # images per PNG panel

    # §2a Leopart/NeCo linear probe (variant "croc": §2b).
    c.linear = mlc.ConfigDict(
        dict(
            variant="leopart",
            n_blocks=4,
            label_size=100,
            eval_size=448,
            epochs=25,
            batch_size=128,
            optimizer="sgd",
            lr=0.01,
            momentum=0.9,
            weight_decay=1e-4,
            milestones=(20,),
            gamma=0.1,
            crop_scale=(0.8, 1.0),
            crop_ratio=(3 / 4, 4 / 3),
            hflip=0.5,
            augment=True,
            schedule="steps",
            min_lr=0.0,
            power=0.9,  # "steps" (× gamma at milestones) | "poly" (§2c)
            iterations=0,  # > 0: a fixed number of steps instead of epochs (MMSeg recipes)
            lr_sweep=(),
        )
    )  # several lrs: one probe each, the best val mIoU is reported (§2b/§2c)
    # The training defaults the probe's run starts from (dense_jax.methods.segmentation through
    # the trainer); the linear section above fills in its recipe.
    c.trainer = common.base()
    c.trainer.segmentation = common.segmentation_section()
    # §3a K-means (K = #classes) and overclustering on val tokens.
    c.kmeans = mlc.ConfigDict(
        dict(
            ks=(21,),
            seeds=5,
            pca_dim=50,
            label_size=100,
            n_iter=100,
            n_init=5,
            max_points_per_centroid=256,
            pca_rows_per_dim=1000,
            init="random",
            resolution="tokens",
            many_to_one="precision",
        )
    )
    # §1 Hummingbird dense NN retrieval.
    c.hbird = mlc.ConfigDict(
        dict(
            size=512,
            k=30,
            temperature=0.02,
            memory_size=10_240_000,
            epochs=2,
            fractions=(1 / 128, 1 / 64, 1 / 8, 1.0),
            seeds=(42, 400, 783, 1293, 4019),
            memory_ignore_to=0,
            crop_scale=(0.5, 2.0),
            crop_ratio=(3 / 4, 4 / 3),
            jitter=0.1,
            jitter_p=0.5,
            query_batch_size=16,
            chunk_size=16384,
            memory_dtype="float32",
            file_sets="",  # "": hbird's shipped sets on a complete public copy, else draws; "draw"; a folder
        )
    )
    # §4 DAVIS-2017 label propagation (DINO).
    c.davis = mlc.ConfigDict(
        dict(
            n_last_frames=7,
            neighborhood=12,
            topk=5,
            temperature=0.1,
            short_side=480,
            multiple=64,
            save_masks=True,
            bound_th=0.008,
            max_ids=16,
        )
    )
    # §3c CBFE; ``community``: the community-detection step (dense_jax/eval/communities.py, needs the
    # optional ``infomap`` package), off here and on in configs/eval/cbfe_voc.py. NeCo's published
    # settings (K_cd 189, wt 0.07, markov time 1.2); Infomap >= 2.16 rejects the reference's seed 0,
    # so the 10 runs use seeds 1..10.
    c.cbfe = mlc.ConfigDict(
        dict(
            tau=0.65,
            sigma=0.6,
            kernel=7,
            min_component=3,
            k_fg=200,
            seeds=5,
            cut_range=(0.55, 0.75),
            label_size=100,
            pca_dim=50,
            n_iter=100,
            n_init=5,
            max_points_per_centroid=256,
            init="random",
            community=mlc.ConfigDict(
                dict(enabled=False, k=189, weight_threshold=0.07, markov_time=1.2, seeds=tuple(range(1, 11)))
            ),
        )
    )
    # CrOC's joint-view clusters per head (dense_jax/eval/croc_clusters.py; the paper's Fig. A1):
    # the clustering settings of the training config (configs/croc_coco.py); all images shown
    # form one normalisation group.
    c.croc_clusters = mlc.ConfigDict(
        dict(view_size=224, crop_scale=(0.25, 1.0), n_images=4, clustering=croc_coco.croc_section())
    )
    # CrIBo's cross-image object matches (dense_jax/eval/cribo_matches.py; the paper's Fig. 4):
    # the clustering settings of configs/cribo_coco.py; the images shown are the bank.
    c.cribo_matches = mlc.ConfigDict(
        dict(view_size=224, crop_scale=(0.25, 1.0), n_images=8, clustering=cribo_coco.cribo_section())
    )

    # PCA colours of the patch tokens and similarity-sorted patches (dense_jax/eval/pca.py).
    c.pca = mlc.ConfigDict(dict(n_images=8, n_neighbours=6))

    return common.apply_variants(c, arg, VARIANTS if variants is None else variants)


def demo(c: mlc.ConfigDict) -> None:
    """Scenes, vit_demo16 at 128 px (8×8 tokens), small splits, short schedules (CPU)."""
    c.data.update(dict(DATASETS["scenes"], limit_train=192, limit_val=48, image_size=(128, 128)))
    c.model.variant = "vit_demo16"
    c.mesh.shape = (-1, 1)
    c.input.update(dict(size=128, batch_size=32))
    c.output.n_show = 4
    c.linear.update(
        dict(label_size=32, eval_size=128, epochs=20, batch_size=32, lr=0.05, milestones=(15,), augment=False)
    )
    c.kmeans.update(dict(ks=(9,), pca_dim=32, label_size=32, n_iter=50, n_init=3))
    c.hbird.update(
        dict(
            size=128,
            k=10,
            memory_size=8192,
            epochs=2,
            fractions=(1 / 8, 1.0),
            seeds=(42, 400),
            memory_ignore_to=-1,
            query_batch_size=16,
            chunk_size=4096,
        )
    )
    c.davis.update(dict(short_side=96, multiple=32, neighborhood=4, save_masks=False))
    c.cbfe.update(dict(k_fg=24, seeds=3, label_size=32, pca_dim=32, n_iter=50, n_init=3))
    c.cbfe.community.update(dict(k=24))


VARIANTS = {"demo": demo}
