"""Dense nearest-neighbour retrieval: the Hummingbird ("hbird") in-context protocol (evaluation.md §1).

Memory (per training subset and seed; E augmentation epochs over its N images, no shuffle):
colour jitter (brightness, contrast, saturation, hue 0.1, each applied with p = 0.5) and a
paired RandomResizedCrop(S, scale (0.5, 2), ratio (3/4, 4/3)); VOC's void 255 becomes class 0
(``hbird.memory_ignore_to``; -1 drops ignore pixels instead); per patch the soft label is the
histogram of its P² pixel classes / P²; ``q = min(g², ⌊M / (N·E)⌋)`` patches per image are kept,
preferring patches of classes that are rare in the image (score = Σ over the classes present in
the patch of the number of patches containing that class, × U(0, 1), keep the q smallest);
features are stored L2-normalised. Labels are stored as uint16 counts (exact), features in
``hbird.memory_dtype``.

Query: val images squashed to S×S, raw (un-normalised) patch features, exact k-NN by dot product
(``ops.knn``, chunked, memory rows sharded over the mesh), weights softmax(cos / 0.02) over the
k = 30 neighbours (cos = score / |f|, exact because memory rows are unit norm), soft labels
aggregated, bilinearly upsampled to S×S, argmax; one confusion matrix over val at S×S.

Reported per fraction (mean over the seeds when f < 1; the full set once), clearly labelled:
- ``reference``: hbird's number: Hungarian matching, mean over all C classes (ADE: /151);
- ``corrected``: identity mapping (the predictions are supervised), mean over the classes
  present, the ignored class excluded (§9).
Subsets (``subsets.resolve_file_sets``): hbird's file sets (``hbird.file_sets`` = a folder of
``1_div_<d>/*_<d>_<seed>.txt``; by default the package's copy of hbird's VOC / ADE20K sets when
the VOC trainaug / ADE train copy holds all their ids), else (or with ``hbird.file_sets="draw"``)
NeCo's rule as ``python -m dense_jax.prepare`` draws it: round(N / d / C_fg) (halves up) distinct images per
foreground class for f = 1/d, nested over fractions for a seed.

Modules: ``kernels`` (the jitted math), ``subsets``, ``driver`` (``run``, memory, queries),
``figures`` (the PNGs); their public names are re-exported here.
"""

from __future__ import annotations

import importlib

from dense_jax.eval.retrieval.kernels import aggregate, memory_rows, patch_counts, sample_patches
from dense_jax.eval.retrieval.subsets import balanced_subsets, class_presence, file_set_subsets

# The driver and the figures read images through grain; imported on first use, so that the
# jitted kernels import without it (the GPU suite's Hummingbird check).
_LAZY = {
    "build_memory": "driver",
    "hbird_jitter": "driver",
    "memory_item": "driver",
    "query": "driver",
    "run": "driver",
    "save_pngs": "figures",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "aggregate",
    "balanced_subsets",
    "build_memory",
    "class_presence",
    "file_set_subsets",
    "hbird_jitter",
    "memory_item",
    "memory_rows",
    "patch_counts",
    "query",
    "run",
    "sample_patches",
    "save_pngs",
]
