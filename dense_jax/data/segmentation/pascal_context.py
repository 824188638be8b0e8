"""Pascal Context (59 or 60 classes) from VOC2010 and the MMSeg-converted masks."""

from __future__ import annotations

from dense_jax.data.segmentation.base import (
    IGNORE_INDEX,
    SegmentationSource,
    _descend,
    _make_lut,
    _read_lines,
    _require,
)

# The MMSeg converter keys the 59 most frequent Detail labels in sorted (= alphabetical) order.
PASCAL_CONTEXT_CLASSES = (
    "aeroplane",
    "bag",
    "bed",
    "bedclothes",
    "bench",
    "bicycle",
    "bird",
    "boat",
    "book",
    "bottle",
    "building",
    "bus",
    "cabinet",
    "car",
    "cat",
    "ceiling",
    "chair",
    "cloth",
    "computer",
    "cow",
    "cup",
    "curtain",
    "dog",
    "door",
    "fence",
    "floor",
    "flower",
    "food",
    "grass",
    "ground",
    "horse",
    "keyboard",
    "light",
    "motorbike",
    "mountain",
    "mouse",
    "person",
    "plate",
    "platform",
    "pottedplant",
    "road",
    "rock",
    "sheep",
    "shelves",
    "sidewalk",
    "sign",
    "sky",
    "snow",
    "sofa",
    "table",
    "track",
    "train",
    "tree",
    "truck",
    "tvmonitor",
    "wall",
    "water",
    "window",
    "wood",
)

_CONTEXT_HELP = """
Download VOC2010 (http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar)
and trainval_merged.json (https://codalabuser.blob.core.windows.net/public/trainval_merged.json),
then convert once with MMSegmentation's tools/dataset_converters/pascal_context.py (needs the
Detail API). Expected layout:
  <root>/                              (= VOCdevkit, or VOCdevkit/VOC2010)
    VOC2010/JPEGImages/<id>.jpg
    VOC2010/SegmentationClassContext/<id>.png      0 = background, 1..59
    VOC2010/ImageSets/SegmentationContext/{train,val}.txt
"""


class PascalContext(SegmentationSource):
    """Pascal Context from the MMSeg-converted masks (evaluation.md §5).

    ``num_classes=59`` (default, MMSeg PascalContextDataset59): background 0 -> 255, c -> c-1.
    ``num_classes=60``: background is class 0 and nothing is ignored in the masks.
    """

    name, group, splits = "Pascal Context", "pascal_context", ("train", "val")

    def __init__(
        self,
        root,
        split: str = "train",
        *,
        num_classes: int = 59,
        ids=None,
        subset=None,
        check_files: bool = True,
        lists_dir=None,
    ):
        if num_classes not in (59, 60):
            raise ValueError(f"Pascal Context has 59 or 60 classes, got {num_classes}")
        self._check_split(split)
        voc = _descend(root, "VOC2010", "JPEGImages")
        split_file = voc / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        masks = voc / "SegmentationClassContext"
        _require(self.name, root, [voc / "JPEGImages", masks, split_file], _CONTEXT_HELP)
        if num_classes == 59:
            self.class_names = PASCAL_CONTEXT_CLASSES
            self._lut = _make_lut([(0, IGNORE_INDEX)] + [(i, i - 1) for i in range(1, 60)])
        else:
            self.class_names = ("background",) + PASCAL_CONTEXT_CLASSES
            self._lut = _make_lut([(i, i) for i in range(60)])
        entries = {i: (voc / "JPEGImages" / f"{i}.jpg", masks / f"{i}.png") for i in _read_lines(split_file)}
        self._setup(
            voc.parent,
            split,
            entries,
            {},
            ids=ids,
            subset=subset,
            check_files=check_files,
            lists_dir=lists_dir,
        )
