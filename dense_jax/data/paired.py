"""Image + mask transforms for supervised segmentation training (evaluation.md §2a/§2b).

`SegmentationCrops` is the trainer's input for the segmentation method: a paired
RandomResizedCrop (image bilinear, mask nearest, same box) to crop², a shared horizontal flip,
ImageNet normalisation, and the mask torch-nearest to the label size; with ``augment=False``
the evaluation transform instead (squash to crop², no randomness).
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np
from PIL import Image

from dense_jax.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_resize_flip,
    eval_transform,
    normalize,
    sample_crop_box,
)
from dense_jax.ops.resize import nearest_resize


@dataclasses.dataclass(frozen=True)
class SegmentationCrops(grain.transforms.RandomMap):
    """{"image": uint8 (H, W, 3), "mask": uint8 (H, W)} → {"image": float32 (S, S, 3),
    "mask": uint8 (L, L)}; other keys pass through except the string ``id``."""

    size: int
    label_size: int = 0  # 0: the crop size
    scale: tuple = (0.8, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    hflip: float = 0.5
    augment: bool = True
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        if self.augment:
            image = Image.fromarray(np.asarray(element["image"])).convert("RGB")
            box = sample_crop_box(rng, (image.height, image.width), self.scale, self.ratio)
            image, mask, _ = crop_resize_flip(
                image,
                box,
                self.size,
                Image.Resampling.BILINEAR,
                rng,
                self.hflip,
                Image.fromarray(np.asarray(element["mask"], np.uint8)),
            )
            image = normalize(image, self.mean, self.std)
        else:
            image, mask = eval_transform(element["image"], element["mask"], self.size, self.mean, self.std)
        mask = np.asarray(mask)
        if self.label_size and self.label_size != self.size:
            mask = nearest_resize(mask, self.label_size)
        rest = {k: v for k, v in element.items() if k not in ("image", "mask", "id")}
        return {**rest, "image": image, "mask": mask}


class PassThrough(grain.transforms.RandomMap):
    """Elements unchanged (inputs prepared before the pipeline, e.g. cached features)."""

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        del rng
        return element
