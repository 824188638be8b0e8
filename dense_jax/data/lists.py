"""Fixed file lists drawn deterministically from the user's copy of the data (evaluation.md §1, §5).

**These are our own draws.** The references' subsets were drawn at random by scripts that
were not released (hbird's fractions) or that depend on filesystem order (the Leopart/NeCo
COCO 10%: ``random.shuffle(os.listdir(...))``), so they cannot be regenerated. For parity
with published numbers load hbird's shipped ``file_sets/`` instead (same one-id-per-line
format; pass them as ``ids=`` to a reader). Our lists depend only on the file names and mask
contents and on numpy's PCG64 ``default_rng(seed)``, so every copy of a dataset gives the
same lists.

Procedures:
- Class-balanced fractions (§1, "NeCo text + counts"): for 1/d of a pool of N images with
  C foreground classes, n = round(N / d / C) images per class. Classes take turns (in class
  order, n rounds); each takes the next image of its own seeded random order of the images
  that contain it, passing over images already taken. So every class is present in at least
  n of the C·n distinct images, and the draws for d = 128, 64, 8 continue one another, which
  makes them nested. VOC trainaug: 80 / 160 / 1320; ADE20K train: 150 / 300 / 2550. The
  Hummingbird protocol draws its subsets with the same functions when it has no file sets.
- COCO 10% (§5 COCO splits): sort the train2017 image ids, permute with the seed, keep the
  first floor(N / 10) (11,828 of 118,287), write them sorted.

Layout (``python -m dense_jax.prepare`` writes it into a reader's ``lists_dir``, by default
``<dataset folder>/dense_jax_lists``; readers load a list with ``subset=<name>``)::

    <lists_dir>/<group>/<split>.txt                      every usable id of a split
    <lists_dir>/<group>/<split>_<d>_<seed>.txt           class-balanced 1/d (hbird's naming)
    <lists_dir>/coco/train_10pct_<seed>.txt              COCO 10%
    <lists_dir>/<group>/excluded.txt                     "id<TAB>reason": files that fail to decode
    <lists_dir>/<group>/README.txt                       how the lists were made
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

SEEDS = (42, 400, 783, 1293, 4019)  # hbird's fraction seeds (§1)
DIVISORS = (128, 64, 8)  # fractions 1/128, 1/64, 1/8; 1/1 is the full split list
COCO_PERCENT = 10
COCO_SEED = 400  # the seed Leopart/NeCo set before their (irreproducible) shuffle

# Counts of the complete official data (§1, §5); checked when a copy is complete.
EXPECTED_SIZES = {
    "voc": {"train": 1464, "trainaug": 10582, "val": 1449},
    "ade20k": {"train": 20210, "val": 2000},
    "coco": {"train": 118287, "val": 5000},
    "pascal_context": {"train": 4996, "val": 5104},  # MMSeg's converter (papers: 4998 / 5105)
    "davis2017": {"train": 60, "val": 30},
}
EXPECTED_FRACTION_SIZES = {
    "voc": {128: 80, 64: 160, 8: 1320},
    "ade20k": {128: 150, 64: 300, 8: 2550},
    "coco": {COCO_PERCENT: 11828},
}


def lists_dir(root, override=None) -> Path:
    """Where the lists of the dataset folder `root` live: `override`, else <root>/dense_jax_lists."""
    return Path(override) if override is not None else Path(root) / "dense_jax_lists"


def list_path(directory, group: str, name: str) -> Path:
    return Path(directory) / group / f"{name}.txt"


def fraction_name(split: str, divisor: int, seed: int) -> str:
    return f"{split}_{divisor}_{seed}"


def coco_fraction_name(seed: int = COCO_SEED, percent: int = COCO_PERCENT) -> str:
    return f"train_{percent}pct_{seed}"


def read_ids(path) -> tuple[str, ...]:
    """One id per line (blank lines ignored); also reads hbird's file_sets."""
    return tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip())


def write_ids(path, ids: Iterable[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def read_excluded(path) -> dict[str, str]:
    """id -> reason from an excluded.txt; {} if there is none."""
    path = Path(path)
    if not path.is_file():
        return {}
    pairs = (line.split("\t", 1) for line in path.read_text().splitlines() if line.strip())
    return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}


def write_excluded(path, excluded: Mapping[str, str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}\t{' '.join(v.split())}\n" for k, v in sorted(excluded.items())))


def load(directory, group: str, name: str) -> tuple[str, ...]:
    """A prepared list from a lists dir (a reader's ``lists_dir``); readers take ``subset=name``."""
    path = list_path(directory, group, name)
    if not path.is_file():
        raise FileNotFoundError(
            f"no list {path}: write the lists with `python -m dense_jax.prepare --dataset {group} "
            f"--root <dataset root>` (add --lists-dir {directory} if that is not "
            "<dataset root>/dense_jax_lists)"
        )
    return read_ids(path)


def per_class_count(num_images: int, divisor: int, num_classes: int) -> int:
    """n = round(N / d / C), halves rounded up (§1); VOC 10582/20 -> 4, 8, 66."""
    return math.floor(num_images / divisor / num_classes + 0.5)


def balanced_fractions(
    presence: Mapping[str, Iterable[int]], classes: Sequence[int], counts: Sequence[int], seed: int
) -> list[tuple[str, ...]]:
    """Nested class-balanced subsets with counts[j] images per class (module docstring).

    `counts` must be non-decreasing; returns one sorted id tuple per count, each holding
    len(classes) * count distinct ids.
    """
    if list(counts) != sorted(counts) or (counts and counts[0] < 0):
        raise ValueError(f"counts must be non-negative and non-decreasing, got {counts}")
    members = {c: [] for c in classes}
    for key in sorted(presence):
        for c in presence[key]:
            if c in members:
                members[c].append(key)
    rng = np.random.default_rng(seed)
    queues = [[members[c][j] for j in rng.permutation(len(members[c]))] for c in classes]
    cursor = [0] * len(classes)
    taken: set[str] = set()
    rounds, out = 0, []
    for count in counts:
        for _ in range(rounds, count):
            for k, c in enumerate(classes):
                queue = queues[k]
                while cursor[k] < len(queue) and queue[cursor[k]] in taken:
                    cursor[k] += 1
                if cursor[k] == len(queue):
                    raise ValueError(
                        f"class {c} is present in only {len(queue)} images, too few to give it "
                        f"{count} images of its own"
                    )
                taken.add(queue[cursor[k]])
                cursor[k] += 1
        rounds = max(rounds, count)
        out.append(tuple(sorted(taken)))
    return out


def random_fraction(ids: Iterable[str], percent: int, seed: int) -> tuple[str, ...]:
    """floor(N * percent / 100) ids: sort, permute with `seed`, keep the first; sorted."""
    ordered = sorted(set(ids))
    keep = len(ordered) * percent // 100
    order = np.random.default_rng(seed).permutation(len(ordered))[:keep]
    return tuple(sorted(ordered[j] for j in order))
