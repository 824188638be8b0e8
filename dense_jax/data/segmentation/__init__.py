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
| COCO81 (COMUS) | train 118287, val 5000 | background + 80 things | panoptic, or stuffthingmaps |
| COCOStuff164k | train 118287, val 5000 | 171 (80 things + 91 stuff) | stuffthingmaps |
| ADE20K | train 20210, val 2000 | 151, 0 ignored (or 150) | ADEChallengeData2016 |
| PascalContext | train 4996, val 5104 (MMSeg) | 59 (or 60) | VOC2010 + MMSeg masks |
| DAVIS2017 | train 60, val 30 sequences | objects 1..N, void 255 | DAVIS-2017 480p |

One module per dataset (``voc``, ``coco``, ``ade20k``, ``pascal_context``, ``davis``) on the
shared ``base``; this package re-exports the readers and names them in `DATASETS` for
`open_source`.

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

from dense_jax.data import lists
from dense_jax.data.segmentation.ade20k import ADE20K, ADE20K_CLASSES
from dense_jax.data.segmentation.base import IGNORE_INDEX, SegmentationSource, UnreadableSampleError
from dense_jax.data.segmentation.coco import (
    COCO81,
    COCO81_CLASSES,
    COCO_STUFF164K_CLASSES,
    COCO_STUFF_CLASSES,
    COCO_STUFF_IDS,
    COCO_THING_ID_RANGES,
    COCO_THINGS_CLASSES,
    COCOStuff,
    COCOStuff164k,
    COCOThings,
    coco_stuff_lut,
    coco_things_lut,
)
from dense_jax.data.segmentation.davis import DAVIS2017
from dense_jax.data.segmentation.pascal_context import PASCAL_CONTEXT_CLASSES, PascalContext
from dense_jax.data.segmentation.voc import VOC_CLASSES, VOCSegmentation

__all__ = [
    "COCO81",
    "COCO81_CLASSES",
    "COCO_STUFF164K_CLASSES",
    "COCOStuff164k",
    "ADE20K",
    "ADE20K_CLASSES",
    "COCO_STUFF_CLASSES",
    "COCO_STUFF_IDS",
    "COCO_THING_ID_RANGES",
    "COCO_THINGS_CLASSES",
    "COCOStuff",
    "COCOThings",
    "DATASETS",
    "DAVIS2017",
    "IGNORE_INDEX",
    "PASCAL_CONTEXT_CLASSES",
    "PascalContext",
    "SegmentationSource",
    "UnreadableSampleError",
    "VOC_CLASSES",
    "VOCSegmentation",
    "coco_stuff_lut",
    "coco_things_lut",
    "open_source",
]

DATASETS = {
    "voc": VOCSegmentation,
    "coco_things": COCOThings,
    "coco_stuff": COCOStuff,
    "coco81": COCO81,
    "coco_stuff164k": COCOStuff164k,
    "ade20k": ADE20K,
    "pascal_context": PascalContext,
    "davis2017": DAVIS2017,
}
_ALIASES = {"ade": "ade20k", "davis": "davis2017"}


def open_source(name: str, split: str, root, **kwargs):
    """The reader `name` (a key of DATASETS, or "ade"/"davis") for `split`. COCO's split
    "train10" is train2017 restricted to the prepared 10% list, the Leopart/NeCo linear probe's
    training set (evaluation.md §2a)."""
    name = _ALIASES.get(name, name)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; one of {sorted(DATASETS)}")
    if name.startswith("coco") and split == "train10":
        split = "train"
        kwargs.setdefault("subset", lists.coco_fraction_name())
    return DATASETS[name](root, split, **kwargs)
