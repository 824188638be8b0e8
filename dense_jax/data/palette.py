"""The one colour map of label images: PASCAL VOC's, used by the scenes grid, the eval PNG panels
and the DAVIS palette PNGs."""

from __future__ import annotations

import numpy as np


def _voc_palette() -> np.ndarray:
    """(256, 3) uint8 PASCAL VOC colour map (bit-interleaved ids); id 255 (ignore) is white."""
    ids = np.arange(256)
    colours = np.zeros((256, 3), np.int64)
    bits = ids.copy()
    for j in range(8):
        for channel in range(3):
            colours[:, channel] |= ((bits >> channel) & 1) << (7 - j)
        bits >>= 3
    colours[255] = 255
    return colours.astype(np.uint8)


PALETTE = _voc_palette()


def colourise(labels) -> np.ndarray:
    """Integer map (H, W) -> (H, W, 3) uint8 with :data:`PALETTE` (ids taken modulo 256)."""
    return PALETTE[np.asarray(labels, np.int64) % 256]
