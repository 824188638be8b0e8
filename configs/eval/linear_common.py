"""Linear-probe variants shared by the linear_<dataset> configs (evaluation.md §2a, §2b)."""
from __future__ import annotations

import ml_collections as mlc

from configs.eval import base


def make(dataset: str, arg: str | None, croc_epochs: int) -> mlc.ConfigDict:
    """``arg``: None (Leopart/NeCo §2a), "croc" (CrOC §2b), "demo", "croc_demo"."""
    variants = (None, "", "default", "demo", "croc", "croc_demo")
    if arg not in variants:
        raise ValueError(f"unknown variant {arg!r}; use one of {variants[2:]}")
    croc = arg in ("croc", "croc_demo")
    c = base.make("linear", dataset, "demo" if arg in ("demo", "croc_demo") else None)
    if croc:
        # §2b: last 4 blocks concatenated, labels at the full S×S resolution, Adam 1e-3, no
        # schedule; batch size and augmentation unspecified -> §2a's.
        c.linear.update(dict(variant="croc", label_size=0, optimizer="adam", lr=1e-3,
                             weight_decay=0.0, milestones=()))
        if arg == "croc":
            c.linear.epochs = croc_epochs
    return c
