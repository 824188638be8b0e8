"""Readers for the real evaluation datasets, from their official raw layouts (evaluation.md §5).

Each reader is a grain random-access source (``grain.MapDataset.source(reader)``)::

    len(reader); reader[i] -> {"image": uint8 (H, W, 3), "mask": uint8 (H, W), "id": str}

with ``class_names``, ``num_classes`` and ``ignore_index`` (255 everywhere except ADE20K in its
reference convention, where 0 = "other" is the ignored class, §1/§5). Ids are sorted, which is
the order the references iterate in. A split can be restricted to a file list:
``subset="trainaug_128_42"`` loads one that ``python -m dense_jax.prepare`` wrote into
``reader.lists_dir`` (default ``<dataset folder>/dense_jax_lists``: VOCdevkit,
ADEChallengeData2016, the COCO root, DAVIS), ``ids=`` takes any ids (e.g. hbird's
``file_sets``, for parity).

| reader | splits | classes | raw source |
|---|---|---|---|
| VOCSegmentation | train 1464, trainaug 10582, val 1449 | 21 | VOC2012 + Aug or SBD |
| COCOThings | train 118287, val 5000 | 12 super-categories | panoptic, or stuffthingmaps |
| COCOStuff | train 118287, val 5000 | 15 super-categories | pixelmaps, or stuffthingmaps |
| ADE20K | train 20210, val 2000 | 151, 0 ignored (or 150) | ADEChallengeData2016 |
| PascalContext | train 4996, val 5104 (MMSeg) | 59 (or 60) | VOC2010 + MMSeg masks |
| DAVIS2017 | train 60, val 30 sequences | objects 1..N, void 255 | DAVIS-2017 480p |

TFDS is not used: ``voc/2012`` and ``scene_parse150`` carry no usable semantic masks, and
the builders that would fit (``coco/2017_panoptic``, ``davis``) need TensorFlow to build (§5).

Robustness. At construction every (image, mask) pair is checked from the file headers only
(existence, decodability of the header, mask mode, mask size == image size); a failing pair is
left out and listed in ``reader.skipped`` as ``(id, reason)``, never passed on. A file that is
only corrupt further in (e.g. a truncated JPEG) raises `UnreadableSampleError` naming it when
read; ``python -m dense_jax.prepare --verify`` decodes everything once and writes
``<lists_dir>/<group>/excluded.txt``, which readers then skip. Mask values outside
a dataset's label set are an error too, so a wrong file never becomes silent garbage.
A missing dataset raises one `FileNotFoundError` saying what to download and the layout
expected under the root; nothing is ever downloaded (architecture.md, house rules).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io
from PIL import Image

from dense_jax.data import lists

IGNORE_INDEX = 255

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

# COCO-Things: thing category id ranges -> the index of their super-category in the sorted
# list (evaluation.md §5). Ids 12, 29, 30, 45, 66, 68, 69 inside the ranges are unused by COCO.
COCO_THINGS_CLASSES = (
    "accessory", "animal", "appliance", "electronic", "food", "furniture", "indoor",
    "kitchen", "outdoor", "person", "sports", "vehicle",
)
COCO_THING_ID_RANGES = {
    "person": (1, 1), "vehicle": (2, 9), "outdoor": (10, 15), "animal": (16, 25),
    "accessory": (27, 33), "sports": (34, 43), "kitchen": (44, 51), "food": (52, 61),
    "furniture": (62, 70), "electronic": (72, 77), "appliance": (78, 82), "indoor": (84, 90),
}

# COCO-Stuff: stuff category ids 92..182 -> sorted super-category index (evaluation.md §5).
COCO_STUFF_CLASSES = (
    "building", "ceiling", "floor", "food-stuff", "furniture-stuff", "ground", "plant",
    "raw-material", "sky", "solid", "structural", "textile", "wall", "water", "window",
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

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

# The MMSeg converter keys the 59 most frequent Detail labels in sorted (= alphabetical) order.
PASCAL_CONTEXT_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person",
    "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
    "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)

_INDEX_MODES = ("P", "L")  # palette or grayscale PNG: the pixel values are the label indices
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, KeyError, AttributeError)
_WORKERS = min(16, 4 * (os.cpu_count() or 1))  # header checks are I/O bound


class UnreadableSampleError(RuntimeError):
    """A file of the dataset cannot be decoded, or decodes to something that is not a sample."""


# ---------------------------------------------------------------------------- helpers


def _make_lut(pairs) -> np.ndarray:
    """int16 (256,) lookup raw value -> label; values not in `pairs` are invalid (-1)."""
    lut = np.full(256, -1, np.int16)
    for raw, label in pairs:
        lut[raw] = label
    return lut


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


def _stuffthingmaps_lut(by_category_id: np.ndarray) -> np.ndarray:
    """stuffthingmaps store category id - 1 (0..181) with 255 = unlabeled; every id 1..182 is
    a real category there, so one without a label in `by_category_id` (a thing, for
    COCO-Stuff) is ignored."""
    pairs = [(255, IGNORE_INDEX)] + [(v, by_category_id[v + 1]) if by_category_id[v + 1] >= 0
                                     else (v, IGNORE_INDEX) for v in range(182)]
    return _make_lut(pairs)


def _missing(name: str, root, missing: Sequence[Path], help_text: str) -> FileNotFoundError:
    paths = "\n".join(f"  {p}" for p in missing)
    return FileNotFoundError(
        f"{name} not found under root {str(root)!r}. Missing:\n{paths}\n{help_text.strip()}\n"
        "dense_jax never downloads data: fetch the files above and point `root` at them.")


def _require(name: str, root, paths: Sequence[Path], help_text: str) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise _missing(name, root, missing, help_text)


def _descend(root, child: str, marker: str) -> Path:
    """The dataset folder `child`: `root` itself if it holds `marker`, else root/child."""
    root = Path(root)
    return root if (root / marker).exists() else root / child


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read_image(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def _read_index_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode not in _INDEX_MODES:
            raise ValueError(f"mask mode {im.mode!r} is not a label-index PNG (expected P or L)")
        return np.array(im)


def _read_sbd_mat(path: Path) -> np.ndarray:
    """SBD ``cls/<id>.mat``: struct GTcls with field Segmentation (uint8 class ids)."""
    mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    return np.asarray(mat["GTcls"].Segmentation, np.uint8)


def _header(path: Path, modes: Sequence[str] | None = None) -> tuple[int, int]:
    """(W, H) from the file header; checks the mode if `modes` is given."""
    if path.suffix == ".mat":
        h, w = _read_sbd_mat(path).shape
        return w, h
    with Image.open(path) as im:
        if modes is not None and im.mode not in modes:
            raise ValueError(f"mask mode {im.mode!r}, expected one of {tuple(modes)}")
        return im.size


def _probe_pair(image: Path, mask: Path, mask_modes: Sequence[str]) -> str | None:
    """Why the (image, mask) pair is unusable, from headers only; None if it looks fine."""
    for path, kind in ((image, "image"), (mask, "mask")):
        if not path.is_file():
            return f"missing {kind} file {path}"
    try:
        image_size = _header(image)
    except _READ_ERRORS as err:
        return f"unreadable image {image}: {err}"
    try:
        mask_size = _header(mask, mask_modes)
    except _READ_ERRORS as err:
        return f"unreadable mask {mask}: {err}"
    if mask_size != image_size:
        (mw, mh), (iw, ih) = mask_size, image_size
        return f"mask {mask} is {mw}x{mh} but image {image} is {iw}x{ih}"
    return None


# ---------------------------------------------------------------------------- base


class _Source:
    """Shared machinery: id selection, excluded/skipped bookkeeping, header checks."""

    name: str  # for messages
    group: str  # directory under the lists dir (excluded.txt, prepared lists)
    splits: tuple[str, ...]

    def _setup(self, home, split, entries: dict, skipped: dict, *, ids, subset, check_files,
               lists_dir):
        """`home`: the dataset's own folder (lists live in <home>/dense_jax_lists by default);
        `entries`: id -> whatever `_probe`/`__getitem__` need; `skipped`: id -> reason."""
        self.root, self.split = Path(home), split
        self.lists_dir = lists.lists_dir(home, lists_dir)
        if subset is not None:
            if ids is not None:
                raise ValueError("pass either ids= or subset=, not both")
            ids = lists.load(self.lists_dir, self.group, subset)
        if ids is not None:
            wanted = set(ids)
            unknown = sorted(wanted - set(entries) - set(skipped))
            if unknown:
                raise ValueError(f"{self.name} {split}: {len(unknown)} requested ids are not in "
                                 f"the split, e.g. {unknown[:5]}")
            entries = {k: v for k, v in entries.items() if k in wanted}
            skipped = {k: v for k, v in skipped.items() if k in wanted}
        excluded = lists.read_excluded(lists.list_path(self.lists_dir, self.group, "excluded"))
        for key in sorted(set(entries) & set(excluded)):
            skipped[key] = f"excluded by {self.lists_dir}/{self.group}/excluded.txt: {excluded[key]}"
            del entries[key]
        if check_files:
            keys = sorted(entries)
            with concurrent.futures.ThreadPoolExecutor(_WORKERS) as pool:
                reasons = list(pool.map(lambda k: self._probe(entries[k]), keys))
            for key, reason in zip(keys, reasons):
                if reason is not None:
                    skipped[key] = reason
                    del entries[key]
        self.ids = tuple(sorted(entries))
        self._entries = [entries[k] for k in self.ids]
        self.skipped = tuple(sorted(skipped.items()))

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"{self.name}: split must be one of {self.splits}, got {split!r}")

    def _probe(self, entry) -> str | None:
        raise NotImplementedError

    def _check_index(self, index) -> int:
        index = int(index)
        if not 0 <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} samples")
        return index

    def _unreadable(self, path, err) -> UnreadableSampleError:
        return UnreadableSampleError(
            f"{self.name}: cannot use {path}: {err}. To skip every such file, run "
            f"`python -m dense_jax.prepare --dataset {self.group} --root {self.root} --verify` "
            f"(writes {lists.list_path(self.lists_dir, self.group, 'excluded')}).")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.root)!r}, {self.split!r}: {len(self)} samples, "
                f"{len(self.skipped)} skipped)")


class SegmentationSource(_Source):
    """An image/mask dataset. Entries are (image path, mask path); `_lut` maps raw mask values."""

    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    _mask_modes: tuple[str, ...] = _INDEX_MODES
    _lut: np.ndarray  # int16 (256,), -1 = a value that must not occur

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _probe(self, entry) -> str | None:
        return _probe_pair(*entry, self._mask_modes)

    def _raw_mask(self, index: int, path: Path) -> np.ndarray:
        return _read_sbd_mat(path) if path.suffix == ".mat" else _read_index_png(path)

    def read_mask(self, index) -> np.ndarray:
        """uint8 (H, W) labels of sample `index` (no image decode)."""
        index = self._check_index(index)
        path = self._entries[index][1]
        try:
            raw = self._raw_mask(index, path)
        except _READ_ERRORS as err:
            raise self._unreadable(path, err) from err
        labels = self._lut[raw]
        if (labels < 0).any():
            bad = np.unique(raw[labels < 0])[:10].tolist()
            raise self._unreadable(path, f"mask values {bad} are not labels of {self.name}")
        return labels.astype(np.uint8)

    def __getitem__(self, index) -> dict:
        index = self._check_index(index)
        image_path = self._entries[index][0]
        try:
            image = _read_image(image_path)
        except _READ_ERRORS as err:
            raise self._unreadable(image_path, err) from err
        mask = self.read_mask(index)
        if mask.shape != image.shape[:2]:
            raise self._unreadable(self._entries[index][1],
                                   f"mask shape {mask.shape} != image shape {image.shape[:2]}")
        return {"image": image, "mask": mask, "id": self.ids[index]}


# ---------------------------------------------------------------------------- VOC

_VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
_AUG_URL = "https://www.dropbox.com/s/oeu149j8qtbs1x0/SegmentationClassAug.zip"
_SBD_URL = ("http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
            "benchmark.tgz")
_VOC_HELP = f"""
Download VOCtrainval_11-May-2012.tar   {_VOC_URL}
and for trainaug (the references read train masks from it too) one of
  SegmentationClassAug.zip            {_AUG_URL}
  SBD benchmark.tgz                   {_SBD_URL}
Expected layout:
  <root>/                              (= VOCdevkit; VOCdevkit/VOC2012 itself is accepted too)
    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png          palette PNG, 0 bg, 1..20, 255 void
    VOC2012/ImageSets/Segmentation/{{train,val}}.txt
    VOC2012/SegmentationClassAug/<id>.png       unzip SegmentationClassAug.zip here, or
    benchmark_RELEASE/dataset/{{cls/<id>.mat,train.txt,val.txt}}   (or pass sbd_root=)
"""


class VOCSegmentation(SegmentationSource):
    """Pascal VOC 2012 segmentation (evaluation.md §5); 21 classes, 255 = void.

    trainaug = (SBD train ∪ SBD val ∪ VOC train) \\ VOC val, with SBD's lists when SBD is
    given, else the ids of SegmentationClassAug (which holds exactly SBD ∪ VOC trainval).
    train/trainaug masks: SegmentationClassAug if present (as the references), else the VOC
    PNG when the image has one, else SBD ``cls/*.mat`` (the order used to build the Aug set).
    val masks: SegmentationClass. `sbd_root` is the directory holding cls/, train.txt, val.txt.
    """

    name, group, splits = "Pascal VOC 2012", "voc", ("train", "trainaug", "val")
    class_names = VOC_CLASSES
    _lut = _make_lut([(i, i) for i in range(21)] + [(255, 255)])

    def __init__(self, root, split: str = "trainaug", *, sbd_root=None, ids=None,
                 subset=None, check_files: bool = True, lists_dir=None):
        self._check_split(split)
        voc = _descend(root, "VOC2012", "JPEGImages")
        sets = voc / "ImageSets" / "Segmentation"
        _require(self.name, root, [voc / "JPEGImages", voc / "SegmentationClass",
                                   sets / "train.txt", sets / "val.txt"], _VOC_HELP)
        aug = voc / "SegmentationClassAug"
        sbd = Path(sbd_root) if sbd_root is not None else voc.parent / "benchmark_RELEASE" / "dataset"
        has_aug = aug.is_dir()
        has_sbd = all(p.exists() for p in (sbd / "cls", sbd / "train.txt", sbd / "val.txt"))
        if split == "trainaug" and not (has_aug or has_sbd):
            raise _missing(self.name + " trainaug masks", root,
                           [aug, sbd / "cls", sbd / "train.txt", sbd / "val.txt"], _VOC_HELP)
        train, val = _read_lines(sets / "train.txt"), _read_lines(sets / "val.txt")
        if split == "val":
            names = val
        elif split == "train":
            names = train
        else:
            extra = (_read_lines(sbd / "train.txt") + _read_lines(sbd / "val.txt") if has_sbd
                     else [p.stem for p in aug.glob("*.png")])
            names = sorted((set(extra) | set(train)) - set(val))

        def mask_path(i):
            voc_png = voc / "SegmentationClass" / f"{i}.png"
            if split == "val":
                return voc_png
            if has_aug:
                return aug / f"{i}.png"
            return voc_png if voc_png.is_file() else sbd / "cls" / f"{i}.mat"

        entries = {i: (voc / "JPEGImages" / f"{i}.jpg", mask_path(i)) for i in names}
        self._setup(voc.parent, split, entries, {},
                    ids=ids, subset=subset, check_files=check_files, lists_dir=lists_dir)


# ---------------------------------------------------------------------------- COCO

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

    def __init__(self, root, split: str = "train", *, source: str = "auto", ids=None,
                 subset=None, check_files: bool = True, lists_dir=None):
        self._check_split(split)
        root = Path(root)
        images = root / f"{split}2017"
        if source == "auto":
            found = [s for s in self.sources
                     if all(p.exists() for p in _coco_source_paths(root, split, s))]
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
        self._lut = _stuffthingmaps_lut(lut) if source == "stuffthingmaps" else lut
        self._setup(root, split, entries, skipped,
                    ids=ids, subset=subset, check_files=check_files, lists_dir=lists_dir)


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
                np.array([c for _, c in seg], np.uint8).reshape(-1))
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
            raise ValueError(f"segment ids {np.unique(segment[unknown])[:10].tolist()} are not in "
                             "the JSON's segments_info")
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
            raise ValueError(f"{path}: category {c['id']} ({c['name']}, {c['supercategory']}) does "
                             "not match the COCO-Things table of evaluation.md §5")


class COCOStuff(_COCOSource):
    """COCO-Stuff: 15 stuff super-categories; unlabeled (0) and things ("other", 183) are 255.

    source "pixelmaps" (default when present, the references' source): the official
    stuff_{split}2017_pixelmaps; "stuffthingmaps": COCO-Stuff-164k maps (same stuff pixels).
    """

    name = "COCO-Stuff"
    sources = ("pixelmaps", "stuffthingmaps")
    class_names = COCO_STUFF_CLASSES
    _category_lut = staticmethod(coco_stuff_lut)


# ---------------------------------------------------------------------------- ADE20K

_ADE_HELP = """
Download http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip (not TFDS
scene_parse150, whose masks are instance maps). Expected layout:
  <root>/                              (= ADEChallengeData2016, or its parent)
    images/{training,validation}/ADE_*.jpg
    annotations/{training,validation}/ADE_*.png      uint8, 0 = other, 1..150
"""


class ADE20K(SegmentationSource):
    """ADE20K SceneParsing-150 (evaluation.md §5).

    Default (the references' convention, §1): masks keep 0..150, 151 classes with "other" = 0
    as `ignore_index`. ``reduce_zero_label=True`` (MMSeg): 0 -> 255, c -> c-1, 150 classes.
    """

    name, group, splits = "ADE20K", "ade20k", ("train", "val")

    def __init__(self, root, split: str = "train", *, reduce_zero_label: bool = False, ids=None,
                 subset=None, check_files: bool = True, lists_dir=None):
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
        self._setup(ade, split, entries, {},
                    ids=ids, subset=subset, check_files=check_files, lists_dir=lists_dir)


# ---------------------------------------------------------------------------- Pascal Context

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

    def __init__(self, root, split: str = "train", *, num_classes: int = 59, ids=None,
                 subset=None, check_files: bool = True, lists_dir=None):
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
        entries = {i: (voc / "JPEGImages" / f"{i}.jpg", masks / f"{i}.png")
                   for i in _read_lines(split_file)}
        self._setup(voc.parent, split, entries, {},
                    ids=ids, subset=subset, check_files=check_files, lists_dir=lists_dir)


# ---------------------------------------------------------------------------- DAVIS

_DAVIS_HELP = """
Download https://data.vision.ee.ethz.ch/csergi/share/davis/DAVIS-2017-trainval-480p.zip.
Expected layout:
  <root>/                              (= DAVIS, or its parent)
    JPEGImages/480p/<sequence>/00000.jpg ...
    Annotations/480p/<sequence>/00000.png ...   palette PNG: 0 bg, 1..N objects, 255 void
    ImageSets/2017/{train,val}.txt
"""


class DAVIS2017(_Source):
    """DAVIS-2017 semi-supervised VOS, one sample per sequence (evaluation.md §4, §5).

    ``reader[i]`` -> {"image": uint8 (T, H, W, 3), "mask": uint8 (T, H, W), "id": sequence,
    "frame_ids": tuple of frame names, "num_objects": N} with frames in sorted file order and
    N = the largest object id in the first annotation (255 = void is not an object). A sequence
    with any unreadable or mis-sized file is skipped as a whole.
    """

    name, group, splits = "DAVIS 2017", "davis2017", ("train", "val")

    def __init__(self, root, split: str = "val", *, resolution: str = "480p", ids=None,
                 subset=None, check_files: bool = True, lists_dir=None):
        self._check_split(split)
        davis = _descend(root, "DAVIS", "JPEGImages")
        frames_dir, masks_dir = davis / "JPEGImages" / resolution, davis / "Annotations" / resolution
        split_file = davis / "ImageSets" / "2017" / f"{split}.txt"
        _require(self.name, root, [frames_dir, masks_dir, split_file], _DAVIS_HELP)
        entries, skipped = {}, {}
        for seq in _read_lines(split_file):
            frames = sorted((frames_dir / seq).glob("*.jpg"))
            if not frames:
                skipped[seq] = f"no frames in {frames_dir / seq}"
                continue
            entries[seq] = [(f, masks_dir / seq / f"{f.stem}.png") for f in frames]
        self._setup(davis, split, entries, skipped,
                    ids=ids, subset=subset, check_files=check_files, lists_dir=lists_dir)

    def _probe(self, pairs) -> str | None:
        sizes = set()
        for image, mask in pairs:
            reason = _probe_pair(image, mask, _INDEX_MODES)
            if reason is not None:
                return reason
            sizes.add(_header(image))
        return None if len(sizes) == 1 else f"frames of different sizes {sorted(sizes)}"

    def __getitem__(self, index) -> dict:
        index = self._check_index(index)
        images, masks = [], []
        for image_path, mask_path in self._entries[index]:
            for path, reader, out in ((image_path, _read_image, images),
                                      (mask_path, _read_index_png, masks)):
                try:
                    out.append(reader(path))
                except _READ_ERRORS as err:
                    raise self._unreadable(path, err) from err
            if masks[-1].shape != images[-1].shape[:2] or images[-1].shape != images[0].shape:
                raise self._unreadable(mask_path, "frame/mask sizes differ within the sequence")
        first = masks[0]
        objects = first[first != IGNORE_INDEX]
        return {
            "image": np.stack(images), "mask": np.stack(masks), "id": self.ids[index],
            "frame_ids": tuple(p.stem for p, _ in self._entries[index]),
            "num_objects": int(objects.max()) if objects.size else 0,
        }


DATASETS = {
    "voc": VOCSegmentation,
    "coco_things": COCOThings,
    "coco_stuff": COCOStuff,
    "ade20k": ADE20K,
    "pascal_context": PascalContext,
    "davis2017": DAVIS2017,
}
_ALIASES = {"ade": "ade20k", "davis": "davis2017"}


def open_source(name: str, split: str, root, **kwargs):
    """The reader `name` (a key of DATASETS, or "ade"/"davis") for `split`. COCO's split
    "train10" is train2017 restricted to the prepared 10% list (§2a)."""
    name = _ALIASES.get(name, name)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; one of {sorted(DATASETS)}")
    if name.startswith("coco") and split == "train10":
        split = "train"
        kwargs.setdefault("subset", lists.coco_fraction_name())
    return DATASETS[name](root, split, **kwargs)
