"""Export a shipped scenes backbone: a DINO run's teacher, written in the official layout.

The package ships two DINO teachers trained on the built-in scenes (float16, 3.7 MB each):

- ``dense_jax/assets/scenes_vit_demo16_dino.safetensors`` (`dense_jax.models.SCENES_BACKBONE`,
  1024 steps): the COMUS demo's stand-in for DINO ViT-S/8;
- ``dense_jax/assets/scenes_vit_demo16_dino_long.safetensors``
  (`dense_jax.models.SCENES_BACKBONE_LONG`, 3072 steps on 8192 scenes): the NeCo demo's
  stand-in for DINOv2 (``configs/neco_dinov2.py:demo`` starts from it).

Re-create them (benchmarks/scenes.md and scenes_learnability.md give the times and scores)::

    python -m dense_jax.main --config=configs/dino_coco.py:scenes_backbone --workdir=workdirs/scenes_backbone
    PYTHONPATH=. python benchmarks/scenes_backbone.py --workdir=workdirs/scenes_backbone
    python -m dense_jax.main --config=configs/dino_coco.py:scenes_backbone_long \
        --workdir=workdirs/scenes_backbone_long
    PYTHONPATH=. python benchmarks/scenes_backbone.py --workdir=workdirs/scenes_backbone_long \
        --out=dense_jax/assets/scenes_vit_demo16_dino_long.safetensors
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from configs.eval import base
from dense_jax import models
from dense_jax.eval import backbones
from dense_jax.models.registry import variant_config
from dense_jax.train import restore


def export(workdir: str, out: str = models.SCENES_BACKBONE) -> str:
    """Writes the latest teacher backbone of the run in `workdir` to `out` as float16."""
    config = base.make("linear", "voc", "demo")
    _, params, description, model_config = backbones.from_run(workdir, config, restore.teacher_backbone)
    half = jax.tree.map(lambda a: np.asarray(a, np.float16), jax.device_get(params))
    models.save_official(half, variant_config(model_config["variant"]), out)
    return description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", required=True, help="the DINO run (configs/dino_coco.py:scenes_backbone)"
    )
    parser.add_argument("--out", default=models.SCENES_BACKBONE)
    args = parser.parse_args()
    print(f"wrote {args.out} from {export(args.workdir, args.out)}")


if __name__ == "__main__":
    main()
