"""Training subsets of the Hummingbird fractions (evaluation.md §1): class presence, the
class-balanced draw (the one of ``python -m dense_jax.prepare``) and hbird's shipped file sets."""

from __future__ import annotations

import glob
import logging
import os

import numpy as np

from dense_jax.data import lists, shipped_lists

DRAW = "draw"  # ``hbird.file_sets`` value: always our class-balanced draws


def resolve_file_sets(setting: str, group: str, source) -> str:
    """The file-set folder the fractions come from ("" = our class-balanced draws).

    `setting` (``hbird.file_sets``): a folder is used as given, ``"draw"`` means our draws, and
    ``""`` (default) prefers the package's copy of hbird's sets (`shipped_lists.HBIRD`) when
    `source` holds every id they list (a complete copy of the public split), else draws,
    logging why."""
    if setting == DRAW:
        return ""
    if setting or shipped_lists.hbird_file_sets(group) is None:
        return setting
    folder = shipped_lists.hbird_file_sets(group)
    listed = {i for f in folder.rglob("*.txt") for i in lists.read_ids(f)}
    ids = set(getattr(source, "ids", None) or (source[i]["id"] for i in range(len(source))))
    missing = listed - ids
    if not missing:
        return str(folder)
    if listed & ids:  # the public split, but incomplete or limited: the reference sets cannot be used
        logging.warning(
            "hbird: %d ids of the shipped file sets (%s) are not in this %s split (e.g. %s); "
            "using our class-balanced draws",
            len(missing),
            folder,
            group,
            sorted(missing)[0],
        )
    return ""


def class_presence(source, num_classes: int) -> list[np.ndarray]:
    """Classes present in each item's mask (values >= C ignored)."""
    out = []
    for i in range(len(source)):
        present = np.unique(np.asarray(source[i]["mask"]))
        out.append(present[present < num_classes])
    return out


def balanced_subsets(presence: list[np.ndarray], fractions, seed: int, fg_classes) -> dict:
    """Class-balanced, nested subsets (positions into ``presence``) for each fraction f < 1.

    The reference rule (§1, NeCo text + counts) takes round(N·f / C_fg) distinct images per
    foreground class at random, without saying how halves round (its counts hit none). We use
    ``lists.balanced_fractions`` with d = round(1 / f) and n = ``lists.per_class_count``
    (halves round up), the draw ``python -m dense_jax.prepare`` writes its lists with: on a
    reader (ids sorted, so positions are in id order) both give the same images.
    """
    n = len(presence)
    classes = list(fg_classes)
    small_to_large = sorted(f for f in fractions if f < 1)
    counts = [lists.per_class_count(n, int(round(1 / f)), len(classes)) for f in small_to_large]
    empty = [f for f, count in zip(small_to_large, counts) if count == 0]
    if empty:
        raise ValueError(
            f"hbird fraction {empty[0]:g} of {n} images leaves no image per class "
            f"for {len(classes)} foreground classes"
        )
    drawn = lists.balanced_fractions(dict(enumerate(presence)), classes, counts, seed)
    return {f: np.asarray(ids, np.int64) for f, ids in zip(small_to_large, drawn)}


def file_set_subsets(root: str, source, fractions, seed: int) -> dict:
    """hbird's shipped lists ``<root>/1_div_<d>/*_<d>_<seed>.txt`` (one image id per line)."""
    ids = getattr(source, "ids", None) or [source[i]["id"] for i in range(len(source))]
    position = {str(x): i for i, x in enumerate(ids)}
    out = {}
    for f in (f for f in fractions if f < 1):
        d = int(round(1 / f))
        files = glob.glob(os.path.join(root, f"1_div_{d}", f"*_{d}_{seed}.txt"))
        if len(files) != 1:
            raise FileNotFoundError(f"expected one hbird file set 1_div_{d}/*_{d}_{seed}.txt under {root!r}")
        out[f] = np.asarray(sorted(position[i] for i in lists.read_ids(files[0])), np.int64)
    return out
