"""The public fixed file lists shipped inside the package (``dense_jax/data/file_lists/``), so
that no result depends on a link that expires (evaluation.md §5; docs/data.md "The fixed file
lists"). These are facts of the datasets, not draws (our own draws are `dense_jax.data.lists`):

- ``voc/train.txt`` (1,464 ids) and ``voc/val.txt`` (1,449): Pascal VOC 2012
  ``ImageSets/Segmentation``.
- ``voc/trainaug.txt`` (10,582): (SBD train ∪ SBD val ∪ VOC train) \\ VOC val, the
  ``train_aug`` list of the DeepLab-lineage code the references use (the ids of
  ``SegmentationClassAug`` minus val).
- ``davis2017/val.txt`` (30 sequences): DAVIS-2017 ``ImageSets/2017/val.txt``.
- ``hbird_voc/1_div_<d>/trainaug_<d>_<seed>.txt``: Hummingbird's VOC fraction file sets
  (open-hummingbird-eval ``file_sets/voc``; 80 / 160 / 1,320 ids for d = 128 / 64 / 8, seeds
  42, 400, 783, 1293, 4019; nested per seed), the lists behind the published Hummingbird
  numbers. Sorted here (hbird's files are unordered; the protocol uses them as sets).
- ``hbird_ade/1_div_<d>/training_<d>_<seed>.txt``: Hummingbird's ADE20K fraction file sets
  (open-hummingbird-eval ``file_sets/ade20k``; 150 / 300 / 2,550 ids of ADE train for
  d = 128 / 64 / 8, same seeds, nested per seed), sorted likewise.

One id per line, sorted, no duplicates; `SHIPPED` pins each split file by its SHA-256,
`HBIRD` each folder of file sets by one over its files.

A reader lists a split from its shipped list when the user's copy is that split: it lists
some ids (its split file, or the mask folder it derives trainaug from) and all are in the
shipped list. The ids the copy lacks are then listed samples whose files are missing: counted with
their reasons and stopping an evaluation unless ``data.allow_missing`` (as any missing file),
never a silently smaller split. A folder listing ids outside the shipped list (a toy copy,
another dataset) is read as it lists itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

FOLDER = Path(__file__).parent / "file_lists"

# (group, split) -> (number of ids, sha256 of the file)
SHIPPED = {
    ("voc", "train"): (1464, "aa623bd2c8ce4443a8aaae51c524c0eb165e8e44caf6aa9e3ad33d7b75a3ef20"),
    ("voc", "val"): (1449, "cdc1326d12f69ce5153aa5da04a4d8783e146868d42d19f82f44e74b97ac907d"),
    ("voc", "trainaug"): (10582, "d1326bd532648d73bc4b1bd275434eba81930982dc7401a65a8cecb26c028e24"),
    ("davis2017", "val"): (30, "0d88abafe3dcf142ca51c5a348ec3b98a47b93a8452aa41a8cb6da430fe9eb24"),
}


# evaluation dataset name (``data.name``) -> (folder of hbird's file sets, the split they draw
# from, sha256 over the folder)
HBIRD = {
    "voc": ("hbird_voc", "trainaug", "0e6892e4dc6a34eb47a252d5ea549a5d60a36deacd9ce222736710f16e528fcf"),
    "ade": ("hbird_ade", "train", "697e03f58cc2e8b472c083ed3980282222ae396359989606d4c6dc1ba061b100"),
}


def path(group: str, split: str) -> Path:
    return FOLDER / group / f"{split}.txt"


def sha256(group: str, split: str) -> str:
    return hashlib.sha256(path(group, split).read_bytes()).hexdigest()


def load(group: str, split: str) -> tuple[str, ...] | None:
    """The shipped ids of `split`, or None when none is shipped."""
    if (group, split) not in SHIPPED:
        return None
    return tuple(line for line in path(group, split).read_text().splitlines() if line)


def listing(group: str, split: str, found: Iterable[str]) -> list[str]:
    """The ids a reader lists for `split` given the ids the user's copy lists (`found`): the
    shipped list when `found` is a non-empty part of it, else `found` (module docstring)."""
    found = list(found)
    shipped = load(group, split)
    if shipped is None or not found or not set(found) <= set(shipped):
        return found
    return list(shipped)


def folder_sha256(folder: Path) -> str:
    """SHA-256 over the relative path and bytes of every ``*.txt`` under `folder`, in path order."""
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*.txt")):
        digest.update(file.relative_to(folder).as_posix().encode() + b"\n" + file.read_bytes())
    return digest.hexdigest()


def hbird_file_sets(group: str) -> Path | None:
    """The shipped copy of hbird's file-set folder for `group` (``hbird.file_sets`` layout), or None."""
    return FOLDER / HBIRD[group][0] if group in HBIRD else None
