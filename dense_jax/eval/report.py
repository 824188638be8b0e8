"""Results of the evaluation protocols: console table, JSON and PNG panels.

Every protocol driver returns a JSON-ready dict. This module turns the results into a table
for the console, ``results.json`` in the workdir and colour-coded PNGs (rows of image | ground
truth | prediction). Scores are fractions in [0, 1] (``dense_jax.eval.metrics``); the table
prints them ×100 like the papers.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from dense_jax.data.mask_folder import write_label_png
from dense_jax.data.palette import colourise
from dense_jax.eval import metrics


def to_uint8(image, mean, std) -> np.ndarray:
    """Undo the mean/std normalisation of a float (H, W, 3) image for display."""
    x = np.asarray(image, np.float32) * np.float32(std) + np.float32(mean)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _fit(array: np.ndarray, size: tuple[int, int]) -> Image.Image:
    img = Image.fromarray(array)
    if img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.NEAREST)
    return img


def save_panels(
    path: str,
    rows: Sequence[Sequence[np.ndarray]],
    titles: Sequence[str] = (),
    size: tuple[int, int] | None = None,
) -> None:
    """One PNG: each row a list of uint8 RGB (or label) arrays, resized (nearest) to ``size``.

    2-D arrays are treated as label maps and colourised.
    """
    rows = [[a if a.ndim == 3 else colourise(a) for a in map(np.asarray, row)] for row in rows]
    h, w = size or rows[0][0].shape[:2]
    gap, top = 4, 14 if titles else 0
    cols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (cols * (w + gap) + gap, top + len(rows) * (h + gap) + gap), "black")
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(titles):
        draw.text((gap + j * (w + gap), 1), title, fill="white")
    for i, row in enumerate(rows):
        for j, array in enumerate(row):
            canvas.paste(_fit(array, (h, w)), (gap + j * (w + gap), top + gap + i * (h + gap)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path)


def save_indexed_png(path: str, labels: np.ndarray) -> None:
    """Palette PNG of a uint8 label map (DAVIS toolkit format; `mask_folder.write_label_png`)."""
    write_label_png(path, labels)


def supervised_scores(cm, ignore_index: int | None) -> dict:
    """The mIoU variants of a supervised prediction's (C, C) confusion matrix (§1, §2a, §9).

    - ``miou``: reference-faithful for linear probes: identity mapping, mean over all C (an
      absent class counts 0; with ADE's ignored class 0 this is sum_{1..150} IoU / 151);
    - ``miou_hungarian``: the same after Hungarian matching (hbird's reported number);
    - ``miou_corrected``: identity, mean over the classes present in GT or prediction, the
      ignored class (when it is a class id, ADE) excluded.
    """
    num_classes = np.shape(cm)[0]
    excluded = (ignore_index,) if ignore_index is not None and 0 <= ignore_index < num_classes else ()
    identity = metrics.miou_from_confusion(cm)
    hungarian = metrics.miou_from_confusion(cm, metrics.hungarian_match(cm))
    corrected = metrics.miou_from_confusion(cm, average="present", exclude_classes=excluded)
    return {
        "miou": identity["miou"],
        "miou_hungarian": hungarian["miou"],
        "miou_corrected": corrected["miou"],
        "pixel_accuracy": identity["pixel_accuracy"],
        "per_class_iou": identity["per_class_iou"],
    }


def scalars(results: Mapping) -> dict[str, float]:
    """Flat ``{"<protocol>/<score>": fraction}`` of every protocol's ``summary`` (metric logs)."""
    return {
        f"{protocol}/{name}": float(value)
        for protocol, res in results.items()
        for name, value in res["summary"].items()
    }


def table(results: Mapping) -> str:
    """Console table: one line per summary score (x100, as the papers) and the wall time.

    Each protocol result holds ``summary`` (name -> fraction in [0, 1]) and ``time_s``.
    """
    rows = [
        (protocol, name, f"{100 * value:7.2f}")
        for protocol, res in results.items()
        for name, value in res["summary"].items()
    ]
    rows += [(protocol, "wall time", f"{res['time_s']:6.1f}s") for protocol, res in results.items()]
    w0 = max([len(r[0]) for r in rows] + [8])
    w1 = max([len(r[1]) for r in rows] + [5])
    lines = [f"{'protocol'.ljust(w0)}  {'score'.ljust(w1)}  value", "-" * (w0 + w1 + 11)]
    lines += [f"{a.ljust(w0)}  {b.ljust(w1)}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def read_jsonl(path: str) -> list[dict]:
    """The records of a JSON-lines file (``metrics.jsonl``); ``[]`` when it does not exist."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json(path: str, results: Mapping) -> None:
    """``results`` as indented JSON (NaN -> null)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(_jsonable(results), f, indent=1)
