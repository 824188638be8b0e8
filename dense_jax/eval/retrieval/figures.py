"""The Hummingbird PNGs: predictions of the first val images and, for four query patches of
the first one, their nearest memory patches boxed on the source training images."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from dense_jax.eval import features as F
from dense_jax.eval import report


def save_pngs(ctx: F.EvalContext, val: dict, train, shown, patch: int) -> None:
    """``hbird_predictions.png`` (image | GT | retrieval of the first val images) and
    ``hbird_neighbours.png`` (query patches and their nearest memory patches)."""
    preds, neighbours, origin = shown
    report.save_panels(
        ctx.path("hbird_predictions.png"),
        [[img, gt, p] for img, gt, p in zip(val["show"], val["labels"], preds)],
        titles=("image", "ground truth", "retrieval"),
    )
    # Retrieval examples: 4 query patches of the first val image and their 5 nearest memory
    # patches, each drawn on its (un-augmented) source training image.
    size = ctx.config.hbird.size
    g = size // patch
    rows = []
    for r, c in ((g // 4, g // 4), (g // 4, 3 * g // 4), (3 * g // 4, g // 4), (3 * g // 4, 3 * g // 4)):
        row = [_boxed(val["show"][0], ((c + 0.5) * patch, (r + 0.5) * patch), patch)]
        for j in neighbours[r * g + c][:5]:
            image_index, x, y = origin[j]
            image = np.asarray(train[int(image_index)]["image"])
            scale = size / max(image.shape[:2])
            resized = np.asarray(
                Image.fromarray(image).resize((int(image.shape[1] * scale), int(image.shape[0] * scale)))
            )
            row.append(_boxed(resized, ((x + 0.5) * scale, (y + 0.5) * scale), patch))
        rows.append(row)
    report.save_panels(
        ctx.path("hbird_neighbours.png"), rows, titles=("query",) + ("neighbour",) * 5, size=(size, size)
    )


def _boxed(image: np.ndarray, centre, side: float) -> np.ndarray:
    img = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    x, y = centre
    ImageDraw.Draw(img).rectangle(
        [x - side / 2, y - side / 2, x + side / 2, y + side / 2], outline=(255, 0, 0), width=2
    )
    return np.asarray(img)
