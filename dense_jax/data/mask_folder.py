"""A segmentation source whose masks come from a folder of label PNGs (pseudo-labels, e.g. COMUS's
pseudo-masks and teacher labels; comus.md §5-§6), for any method that trains on ``mask``.

`MaskFolder(source, folder, positions)`: item i is ``source[positions[i]]`` (any source yielding
``image`` and ``id``) with ``mask`` read from ``<folder>/<id>.png`` (palette or grayscale PNG,
the pixel values are the labels). `write_label_png` writes such a file.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from dense_jax.core.errors import ReportedError
from dense_jax.data.palette import PALETTE


class MaskFileError(ReportedError, ValueError):
    """A label PNG of a `MaskFolder` is missing, not a label PNG, or not its image's size."""


def write_label_png(path: str, labels: np.ndarray) -> None:
    """uint8 (H, W) labels as a palette PNG (VOC colours), written atomically."""
    img = Image.fromarray(np.asarray(labels, np.uint8), mode="P")
    img.putpalette(PALETTE.ravel().tolist())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.png"
    img.save(tmp)
    os.replace(tmp, path)


def read_label_png(path: str) -> np.ndarray:
    """uint8 (H, W) labels of a palette or grayscale PNG; one error naming the file otherwise."""
    if not os.path.exists(path):
        raise MaskFileError(f"label PNG {path} does not exist")
    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise MaskFileError(f"{path} has mode {im.mode!r}, not a label PNG (P or L)")
        return np.array(im)


class MaskFolder:
    """Items ``positions`` of ``source`` with their masks from ``<folder>/<id>.png``."""

    def __init__(self, source, folder: str, positions):
        self.source, self.folder = source, folder
        self.positions = np.asarray(positions, np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.source[int(self.positions[index])]
        path = os.path.join(self.folder, f"{item['id']}.png")
        mask = read_label_png(path)
        if mask.shape != item["image"].shape[:2]:
            raise MaskFileError(f"{path} is {mask.shape} but its image is {item['image'].shape[:2]}")
        return {"image": item["image"], "mask": mask, "id": item["id"]}
