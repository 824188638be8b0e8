"""Random-access sources for grain: built-in scenes (for training and eval), TFDS, raw image
folders, and `Subset` (chosen items of any source).

Every training source yields ``{"image": uint8 (H, W, 3), "index": int}`` (labels are not used
by the SSL methods), decoded by `dense_jax.data.images`. `SkipUnreadable` wraps a source so that
an image that fails to decode is replaced by the next readable one and counted in the
element's ``"skipped"`` field: the count travels with the batch to the loop, which names each
bad file once and stops by the rule of `dense_jax.data.unreadable`. A missing dataset raises
one `DatasetNotFoundError` saying what to download and where to put it.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import ml_collections as mlc
import numpy as np

from dense_jax.data import images
from dense_jax.data.scenes import IGNORE_INDEX, THING_CLASSES, ScenesConfig, ScenesSource

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")

# data.name -> where the data comes from and how the folder should look.
DOWNLOAD_HINTS = {
    "coco": (
        "COCO train2017: download http://images.cocodataset.org/zips/train2017.zip "
        "(and unlabeled2017.zip for COCO+) and unzip into {root}, giving "
        "{root}/train2017/*.jpg"
    ),
    "imagenet": (
        "ImageNet-1k train: download ILSVRC2012_img_train.tar from "
        "https://image-net.org, extract the per-class tars into "
        "{root}/train/<wnid>/*.JPEG"
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """The configured dataset is not on disk."""


class Source(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> dict[str, Any]: ...


class Scenes:
    """The built-in scenes (`dense_jax.data.scenes`) for every consumer, scene `index` of `split`.

    - ``masks=False`` (SSL training): ``{"image": uint8 (H, W, 3), "index"}``;
    - ``masks=True`` (segmentation eval): also ``"mask"`` (H, W) and ``"id"`` (``<split>_<index:06d>``);
    - ``frames=T > 1`` (video eval, DAVIS-like): a camera panning ``shift`` pixels per frame over one
      wide scene, ``{"image": (T, H, W, 3), "mask": (T, H, W), "index", "id": "scene_video_<index>"}``
      with object ids thing class + 1 (stuff 0 = background, the ignore band 255 = void).
    """

    def __init__(
        self,
        split: str,
        num_examples: int | None = None,
        image_size=(224, 224),
        *,
        masks: bool = True,
        frames: int = 1,
        shift: int = 4,
        style: str = "learnable",
    ):
        h, w = (int(v) for v in image_size)
        self.width, self.masks, self.frames, self.shift = w, masks, frames, shift
        self.scenes = ScenesSource(
            split, num_examples, ScenesConfig(image_size=(h, w + shift * (frames - 1)), style=style)
        )

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.scenes[index]
        image, mask = scene["image"], scene["mask"]
        if self.frames == 1:
            item = {"image": image, "index": scene["index"]}
            return {**item, "mask": mask, "id": f"{self.scenes.split}_{index:06d}"} if self.masks else item
        ids = np.where(np.isin(mask, THING_CLASSES), mask + 1, 0)
        ids = np.where(mask == IGNORE_INDEX, 255, ids).astype(np.uint8)
        cols = [slice(t * self.shift, t * self.shift + self.width) for t in range(self.frames)]
        return {
            "image": np.stack([image[:, c] for c in cols]),
            "mask": np.stack([ids[:, c] for c in cols]),
            "index": scene["index"],
            "id": f"scene_video_{index}",
        }


class Subset:
    """The items `indices` of `source`, in that order; each item's ``index`` is its position in
    `source` (memory provenance in the retrieval protocol)."""

    def __init__(self, source: Source, indices):
        self.source, self.indices = source, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        position = int(self.indices[index])
        return {**self.source[position], "index": position}


class ImageFolder:
    """Every image file under ``root/<folder>`` for each folder, recursively, sorted by path.

    Covers COCO's flat ``train2017/`` (+ ``unlabeled2017/`` for COCO+) and ImageNet's
    ``train/<class>/`` layout alike.
    """

    def __init__(self, root: str, folders, hint: str):
        self.paths: list[str] = []
        for folder in folders:
            directory = os.path.join(os.path.expanduser(root), folder)
            if not os.path.isdir(directory):
                raise DatasetNotFoundError(f"dataset folder {directory!r} not found. {hint}")
            found = [
                os.path.join(d, f)
                for d, _, files in os.walk(directory)
                for f in files
                if f.lower().endswith(IMAGE_EXTENSIONS)
            ]
            if not found:
                raise DatasetNotFoundError(f"no image files under {directory!r}. {hint}")
            self.paths.extend(sorted(found))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": images.decode(self.paths[index]), "index": index}


class TfdsImages:
    """A prepared TFDS dataset read through `tfds.data_source` (array_record, no TensorFlow).

    TFDS decodes the images itself (without TensorFlow, its bytes cannot be taken undecoded),
    so their EXIF orientation is out of reach; the rest of `images.to_rgb` applies to its
    arrays."""

    def __init__(self, name: str, split: str, data_dir: str):
        import tensorflow_datasets as tfds  # only this source needs it

        try:
            self.source = tfds.data_source(name, split=split, data_dir=data_dir or None)
        except Exception as err:  # tfds raises several types for "not prepared"
            where = data_dir or "the TFDS default data_dir (~/tensorflow_datasets)"
            raise DatasetNotFoundError(
                f"TFDS dataset {name!r} (split {split!r}) is not prepared in {where}: build it "
                f"once with `tfds build {name} --data_dir=DIR --file_format=array_record` "
                f"(needs tensorflow), then set --config.data.tfds_data_dir=DIR ({err})"
            ) from err

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": images.to_rgb(self.source[index]["image"]), "index": index}


_DECODE_ERRORS = (OSError, ValueError, SyntaxError)  # what PIL raises for a bad file


class SkipUnreadable:
    """Replaces an unreadable element by the next readable one; counts the skips.

    Deterministic (the replacement only depends on the index), so resumed runs and all hosts
    agree. Elements without an ``index`` get the one they were read at. More than
    `max_consecutive` failures in a row raise an error naming the files.
    """

    def __init__(self, source: Source, max_consecutive: int):
        self.source = source
        self.max_consecutive = max_consecutive

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        errors = []
        for offset in range(min(self.max_consecutive, len(self.source) - 1) + 1):
            try:
                element = self.source[(index + offset) % len(self.source)]
            except _DECODE_ERRORS as err:
                errors.append(f"{(index + offset) % len(self.source)}: {err}")
                continue
            return {"index": (index + offset) % len(self.source), **element, "skipped": offset}
        raise RuntimeError(
            f"{len(errors)} unreadable images in a row from {type(self.source).__name__} "
            f"(data.max_consecutive_bad={self.max_consecutive}); first: {errors[0]}"
        )

    def describe_failure(self, position: int) -> str:
        """``"<file path or item>: <error>"`` of an element that failed to read (read again)."""
        paths = getattr(self.source, "paths", None)
        name = paths[position] if paths is not None else f"{type(self.source).__name__} item {position}"
        try:
            self.source[position]
        except _DECODE_ERRORS as err:
            return f"{name}: {type(err).__name__}: {err}"
        return f"{name}: failed once, readable when read again"


def training_source(data: mlc.ConfigDict) -> SkipUnreadable:
    """The source named by ``data.source`` (``config.data``), wrapped in `SkipUnreadable`."""
    if data.masks and data.source not in ("scenes", "segmentation"):
        raise ValueError(f"data.masks needs data.source 'scenes' or 'segmentation', not {data.source!r}")
    if data.source == "scenes":
        source = Scenes(
            data.split, data.num_examples or None, data.image_size, masks=data.masks, style=data.scenes_style
        )
    elif data.source == "segmentation":  # a labelled dataset reader (dense_jax.data.segmentation)
        from dense_jax.data import segmentation  # lazy: file readers of the real datasets

        source = segmentation.open_source(data.name, data.split, data.root)
    elif data.source == "folder":
        template = DOWNLOAD_HINTS.get(data.name, "Set --config.data.root to the dataset directory.")
        source = ImageFolder(data.root, data.folders, template.format(root=data.root or "<root>"))
    elif data.source == "tfds":
        source = TfdsImages(data.tfds_name, data.split, data.tfds_data_dir)
    else:
        raise ValueError(f"unknown data.source {data.source!r}; use scenes, folder, tfds or segmentation")
    return SkipUnreadable(source, data.max_consecutive_bad)
