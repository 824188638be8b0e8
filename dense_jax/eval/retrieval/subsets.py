"""Training subsets of the Hummingbird fractions (evaluation.md §1): class presence, the
class-balanced draw and hbird's shipped file sets."""
from __future__ import annotations

import glob
import os

import numpy as np

from dense_jax.data import lists


def class_presence(source, num_classes: int) -> list[np.ndarray]:
    """Classes present in each item's mask (values >= C ignored)."""
    out = []
    for i in range(len(source)):
        present = np.unique(np.asarray(source[i]["mask"]))
        out.append(present[present < num_classes])
    return out


def balanced_subsets(presence: list[np.ndarray], fractions, seed: int, fg_classes) -> dict:
    """NeCo's rule (§1): for each fraction f < 1, round(N·f / C_fg) distinct images per
    foreground class, uniformly at random; nested over increasing f for one seed."""
    n = len(presence)
    rng = np.random.default_rng(seed)
    pools = {c: [i for i in rng.permutation(n) if c in presence[i]] for c in fg_classes}
    pointers = {c: 0 for c in fg_classes}
    chosen, taken, per_class = [], set(), {c: 0 for c in fg_classes}
    out = {}
    for f in sorted(f for f in fractions if f < 1):
        target = int(round(n * f / len(fg_classes)))
        for c in fg_classes:
            while per_class[c] < target and pointers[c] < len(pools[c]):
                i = pools[c][pointers[c]]
                pointers[c] += 1
                if i not in taken:
                    taken.add(i)
                    chosen.append(i)
                    per_class[c] += 1
        out[f] = np.asarray(sorted(chosen), np.int64)
    return out


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
