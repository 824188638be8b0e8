"""COCO-Things and COCO-Stuff: COCO 2017 images with super-category masks (panoptic,
pixelmaps or stuffthingmaps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from dense_jax.data.segmentation.base import (
    _INDEX_MODES,
    IGNORE_INDEX,
    SegmentationSource,
    _make_lut,
    _missing,
    _read_index_png,
    _require,
)

# COCO-Things: thing category id ranges -> the index of their super-category in the sorted
# list (evaluation.md §5). Ids 12, 29, 30, 45, 66, 68, 69 inside the ranges are unused by COCO.
COCO_THINGS_CLASSES = (
    "accessory",
    "animal",
    "appliance",
    "electronic",
    "food",
    "furniture",
    "indoor",
    "kitchen",
    "outdoor",
    "person",
    "sports",
    "vehicle",
)
COCO_THING_ID_RANGES = {
    "person": (1, 1),
    "vehicle": (2, 9),
    "outdoor": (10, 15),
    "animal": (16, 25),
    "accessory": (27, 33),
    "sports": (34, 43),
    "kitchen": (44, 51),
    "food": (52, 61),
    "furniture": (62, 70),
    "electronic": (72, 77),
    "appliance": (78, 82),
    "indoor": (84, 90),
}

# COCO-Stuff: stuff category ids 92..182 -> sorted super-category index (evaluation.md §5).
COCO_STUFF_CLASSES = (
    "building",
    "ceiling",
    "floor",
    "food-stuff",
    "furniture-stuff",
    "ground",
    "plant",
    "raw-material",
    "sky",
    "solid",
    "structural",
    "textile",
    "wall",
    "water",
    "window",
)
COCO_STUFF_IDS = {
    "textile": (92, 93, 104, 105, 109, 131, 137, 141, 152, 167, 168),
    "plant": (94, 97, 119, 124, 129, 134, 142, 163, 169),
    "building": (95, 96, 128, 151, 158, 166),
    "furniture-stuff": (98, 107, 108, 110, 112, 123, 130, 133, 156, 161, 165),
    "structural": (99, 113, 138, 146, 164),
    "raw-material": (100, 132, 139, 143),
    "floor": (101, 114, 115, 116, 117, 118),
    "ceiling": (102, 103),
    "sky": (106, 157),
    "ground": (111, 125, 126, 136, 140, 144, 145, 147, 149, 154, 159),
    "water": (120, 148, 155, 178, 179),
    "food-stuff": (121, 122, 153, 170),
    "solid": (127, 135, 150, 160, 162, 182),
    "wall": (171, 172, 173, 174, 175, 176, 177),
    "window": (180, 181),
}


def coco_things_lut() -> np.ndarray:
    """COCO category id -> COCO-Things label: things -> super-category, 0 and stuff -> 255."""
    pairs = [(0, IGNORE_INDEX)] + [(i, IGNORE_INDEX) for i in range(92, 201)]
    for name, (lo, hi) in COCO_THING_ID_RANGES.items():
        pairs += [(i, COCO_THINGS_CLASSES.index(name)) for i in range(lo, hi + 1)]
    return _make_lut(pairs)


def coco_stuff_lut() -> np.ndarray:
    """COCO-Stuff pixelmap value -> COCO-Stuff label: stuff -> super-category, 0/183 -> 255."""
    pairs = [(0, IGNORE_INDEX), (183, IGNORE_INDEX)]
    for name, ids in COCO_STUFF_IDS.items():
        pairs += [(i, COCO_STUFF_CLASSES.index(name)) for i in ids]
    return _make_lut(pairs)


def _stuffthingmaps_lut(by_category_id: np.ndarray, unlabeled: int = IGNORE_INDEX) -> np.ndarray:
    """stuffthingmaps store category id - 1 (0..181) with 255 = unlabeled (-> `unlabeled`); every
    id 1..182 is a real category there, so one without a label in `by_category_id` (a thing, for
    COCO-Stuff) is ignored."""
    pairs = [(255, unlabeled)] + [
        (v, by_category_id[v + 1]) if by_category_id[v + 1] >= 0 else (v, IGNORE_INDEX) for v in range(182)
    ]
    return _make_lut(pairs)


_COCO_HELP = """
Download from https://cocodataset.org/#download the images (http://images.cocodataset.org/zips/
{train2017,val2017}.zip) and the masks of one source:
  panoptic (COCO-Things, reference source): http://images.cocodataset.org/annotations/
      panoptic_annotations_trainval2017.zip, then also unzip the inner panoptic_{split}2017.zip
  pixelmaps (COCO-Stuff, reference source): http://images.cocodataset.org/annotations/
      stuff_annotations_trainval2017.zip, then also unzip the inner stuff_{split}2017_pixelmaps.zip
  stuffthingmaps (either): http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/
      stuffthingmaps_trainval2017.zip  (unzip -d stuffthingmaps_trainval2017)
Expected layout:
  <root>/train2017/<id>.jpg, <root>/val2017/<id>.jpg
  <root>/annotations/panoptic_{split}2017.json + annotations/panoptic_{split}2017/<id>.png
  <root>/annotations/stuff_{split}2017_pixelmaps/<id>.png
  <root>/stuffthingmaps_trainval2017/{split}2017/<id>.png
"""


def _coco_source_paths(root: Path, split: str, source: str) -> list[Path]:
    ann = root / "annotations"
    return {
        "panoptic": [ann / f"panoptic_{split}2017.json", ann / f"panoptic_{split}2017"],
        "pixelmaps": [ann / f"stuff_{split}2017_pixelmaps"],
        "stuffthingmaps": [root / "stuffthingmaps_trainval2017" / f"{split}2017"],
    }[source]


class _COCOSource(SegmentationSource):
    """COCO 2017 images with super-category masks from one of `sources` (first found = auto)."""

    group, splits = "coco", ("train", "val")
    sources: tuple[str, ...]
    _category_lut: staticmethod  # () -> int16 (256,) lookup from COCO category id

    def __init__(
        self,
        root,
        split: str = "train",
        *,
        source: str = "auto",
        ids=None,
        subset=None,
        check_files: bool = True,
        lists_dir=None,
    ):
        self._check_split(split)
        root = Path(root)
        images = root / f"{split}2017"
        if source == "auto":
            found = [s for s in self.sources if all(p.exists() for p in _coco_source_paths(root, split, s))]
            if not found or not images.is_dir():
                wanted = [images] + [p for s in self.sources for p in _coco_source_paths(root, split, s)]
                raise _missing(self.name, root, [p for p in wanted if not p.exists()], _COCO_HELP)
            source = found[0]
        elif source not in self.sources:
            raise ValueError(f"{self.name}: source must be 'auto' or one of {self.sources}")
        else:
            _require(self.name, root, [images] + _coco_source_paths(root, split, source), _COCO_HELP)
        self.source = source
        masks = _coco_source_paths(root, split, source)[-1]
        entries = {p.stem: (p, masks / f"{p.stem}.png") for p in images.glob("*.jpg")}
        skipped = self._load_panoptic(root, split, entries) if source == "panoptic" else {}
        lut = self._category_lut()
        self._lut = _stuffthingmaps_lut(lut, lut[0]) if source == "stuffthingmaps" else lut
        self._setup(
            root,
            split,
            entries,
            skipped,
            ids=ids,
            subset=subset,
            check_files=check_files,
            lists_dir=lists_dir,
        )


class COCOThings(_COCOSource):
    """COCO-Things: 12 thing super-categories; unlabeled and stuff pixels are 255 (§5).

    source "panoptic" (default when present, the references' source): the panoptic PNG
    (segment id = R + 256 G + 65536 B) and segments_info give every pixel its segment's
    category, crowd included, as panopticapi's panoptic2semantic_segmentation does.
    "stuffthingmaps": COCO-Stuff-164k maps, whose things come from the instance masks, so a few
    overlap pixels can differ from the panoptic version.
    """

    name = "COCO-Things"
    sources = ("panoptic", "stuffthingmaps")
    class_names = COCO_THINGS_CLASSES
    _category_lut = staticmethod(coco_things_lut)
    _segments: dict  # id -> (sorted segment ids int64, their category ids uint8)

    def _load_panoptic(self, root, split, entries) -> dict:
        """Reads segments_info; returns the images without an annotation (id -> reason)."""
        path = root / "annotations" / f"panoptic_{split}2017.json"
        with open(path) as f:
            data = json.load(f)
        _check_thing_categories(data["categories"], path)
        self._segments = {}
        for ann in data["annotations"]:
            seg = sorted((s["id"], s["category_id"]) for s in ann["segments_info"])
            self._segments[Path(ann["file_name"]).stem] = (
                np.array([s for s, _ in seg], np.int64).reshape(-1),
                np.array([c for _, c in seg], np.uint8).reshape(-1),
            )
        skipped = {}
        for key in [k for k in entries if k not in self._segments]:
            skipped[key] = f"no annotation for this image in {path}"
            del entries[key]
        return skipped

    @property
    def _mask_modes(self):
        return ("RGB",) if self.source == "panoptic" else _INDEX_MODES

    def _raw_mask(self, index, path):
        if self.source != "panoptic":
            return _read_index_png(path)
        with Image.open(path) as im:
            if im.mode != "RGB":
                raise ValueError(f"panoptic PNG mode {im.mode!r}, expected RGB")
            rgb = np.array(im).astype(np.int64)
        segment = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        seg_ids, categories = self._segments[self.ids[index]]
        pos = np.searchsorted(seg_ids, segment)
        found = pos < len(seg_ids)
        found[found] = seg_ids[pos[found]] == segment[found]
        unknown = ~found & (segment != 0)
        if unknown.any():
            raise ValueError(
                f"segment ids {np.unique(segment[unknown])[:10].tolist()} are not in the JSON's segments_info"
            )
        raw = np.zeros(segment.shape, np.uint8)
        raw[found] = categories[pos[found]]
        return raw


def _check_thing_categories(categories, path) -> None:
    """Every JSON category must get its own super-category from our table (§5)."""
    lut = coco_things_lut()
    for c in categories:
        label = int(lut[c["id"]]) if 0 < c["id"] < 256 else -1
        want = c["supercategory"] if c["isthing"] else None
        got = COCO_THINGS_CLASSES[label] if 0 <= label < len(COCO_THINGS_CLASSES) else None
        if label < 0 or got != want:
            raise ValueError(
                f"{path}: category {c['id']} ({c['name']}, {c['supercategory']}) does "
                "not match the COCO-Things table of evaluation.md §5"
            )


class COCOStuff(_COCOSource):
    """COCO-Stuff: 15 stuff super-categories; unlabeled (0) and things ("other", 183) are 255.

    source "pixelmaps" (default when present, the references' source): the official
    stuff_{split}2017_pixelmaps; "stuffthingmaps": COCO-Stuff-164k maps (same stuff pixels).
    """

    name = "COCO-Stuff"
    sources = ("pixelmaps", "stuffthingmaps")
    class_names = COCO_STUFF_CLASSES
    _category_lut = staticmethod(coco_stuff_lut)


# COCO's 80 thing categories in category-id order (ids 1..90 without the unused 12, 26, 29, 30,
# 45, 66, 68, 69, 71, 83): COMUS's COCO classes 1..80, background 0 (comus.md §7, Table 3).
COCO_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
COCO_THING_IDS = tuple(i for i in range(1, 91) if i not in COCO_UNUSED_IDS)
COCO_THING_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
COCO81_CLASSES = ("background",) + COCO_THING_NAMES

# COCO-Stuff's 91 stuff categories, ids 92..182 in order (the fine labels behind COCO_STUFF_IDS).
COCO_STUFF_NAMES = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter",
    "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)  # fmt: skip
COCO_STUFF164K_IDS = COCO_THING_IDS + tuple(range(92, 183))
COCO_STUFF164K_CLASSES = COCO_THING_NAMES + COCO_STUFF_NAMES


def coco81_lut() -> np.ndarray:
    """COCO category id -> COMUS COCO label: the i-th thing id -> i + 1; unlabeled (0) and stuff
    (92..200) -> background 0; no ignore label (comus.md §7)."""
    pairs = [(0, 0)] + [(i, 0) for i in range(92, 201)]
    return _make_lut(pairs + [(c, k + 1) for k, c in enumerate(COCO_THING_IDS)])


class COCO81(COCOThings):
    """COMUS's COCO: background + the 80 thing categories (81 classes, Table 3), no ignore.

    The reference merges the *instance* masks per category (overlaps keep the first annotation's
    category, crowd regions labelled) and filters val to images with >= 1000 labelled pixels
    (comus.md §7). Instance polygons need pycocotools, so this reader takes the same pixels from
    the panoptic PNGs (crowd included; overlaps resolved as the panoptic release did) or from the
    stuffthingmaps (things from the instance masks; stuff and unlabeled -> background). The val
    filter is the COMUS scorer's (``evaluation.min_labelled_pixels``).
    """

    name = "COCO-81"
    class_names = COCO81_CLASSES
    _category_lut = staticmethod(coco81_lut)


def coco_stuff164k_lut() -> np.ndarray:
    """COCO category id -> COCO-Stuff-164k label: the 171 used categories (80 things in id order,
    then stuff 92..182) -> 0..170, MMSeg's COCOStuffDataset order; unlabeled (0) -> 255."""
    return _make_lut([(0, IGNORE_INDEX)] + [(c, k) for k, c in enumerate(COCO_STUFF164K_IDS)])


class COCOStuff164k(_COCOSource):
    """COCO-Stuff-164k: 171 fine classes (80 things + 91 stuff), unlabeled 255, from the
    stuffthingmaps (CrIBo Table 2's MMSeg protocol, evaluation.md §2c)."""

    name = "COCO-Stuff-164k"
    sources = ("stuffthingmaps",)
    class_names = COCO_STUFF164K_CLASSES
    _category_lut = staticmethod(coco_stuff164k_lut)
