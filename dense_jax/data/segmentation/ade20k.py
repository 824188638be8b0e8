"""ADE20K SceneParsing-150 from ADEChallengeData2016."""

from __future__ import annotations

from dense_jax.data.segmentation.base import IGNORE_INDEX, SegmentationSource, _descend, _make_lut, _require

ADE20K_CLASSES = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)

_ADE_HELP = """
Download http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip (not TFDS
scene_parse150, whose masks are instance maps). Expected layout:
  <root>/                              (= ADEChallengeData2016, or its parent)
    images/{training,validation}/ADE_*.jpg
    annotations/{training,validation}/ADE_*.png      uint8, 0 = other, 1..150
"""


class ADE20K(SegmentationSource):
    """ADE20K SceneParsing-150, read from ADEChallengeData2016 rather than TFDS (evaluation.md §5).

    Default (the references' convention, §1): masks keep 0..150, 151 classes with "other" = 0
    as `ignore_index`. ``reduce_zero_label=True`` (MMSeg): 0 -> 255, c -> c-1, 150 classes.
    """

    name, group, splits = "ADE20K", "ade20k", ("train", "val")

    def __init__(
        self,
        root,
        split: str = "train",
        *,
        reduce_zero_label: bool = False,
        ids=None,
        subset=None,
        check_files: bool = True,
        lists_dir=None,
    ):
        self._check_split(split)
        ade = _descend(root, "ADEChallengeData2016", "images")
        folder = {"train": "training", "val": "validation"}[split]
        images, annotations = ade / "images" / folder, ade / "annotations" / folder
        _require(self.name, root, [images, annotations], _ADE_HELP)
        self.reduce_zero_label = reduce_zero_label
        if reduce_zero_label:
            self.class_names, self.ignore_index = ADE20K_CLASSES, IGNORE_INDEX
            self._lut = _make_lut([(0, IGNORE_INDEX)] + [(i, i - 1) for i in range(1, 151)])
        else:
            self.class_names, self.ignore_index = ("other",) + ADE20K_CLASSES, 0
            self._lut = _make_lut([(i, i) for i in range(151)])
        entries = {p.stem: (p, annotations / f"{p.stem}.png") for p in images.glob("*.jpg")}
        self._setup(
            ade, split, entries, {}, ids=ids, subset=subset, check_files=check_files, lists_dir=lists_dir
        )
