"""Image files decoded as a person would see them: the one decoder every reader goes through
(training folders, the evaluation datasets; TFDS arrays, which TFDS decodes, via `to_rgb`).

- The EXIF orientation tag is applied, so a phone photo stored sideways comes out upright
  (`oriented_size` gives the upright (W, H) from the header alone, for size checks).
- 16-bit greyscale (PIL modes ``I;16*`` and ``I``, as 16-bit PNG/TIFF decode) is scaled from
  0..65535 to 0..255, never clipped (clipping saturates almost every pixel to white).
- Transparency (RGBA, LA, palette or greyscale with a transparent colour) is composited
  onto white, the way the image shows on a white page.
- Everything else is converted to RGB by PIL.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageOps

_ORIENTATION = 0x0112  # EXIF tag
_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height
_WIDE_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N")
BACKGROUND = (255, 255, 255)  # what transparent pixels are composited onto


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(W, H) of `image` once its EXIF orientation is applied; reads the header only."""
    width, height = image.size
    if image.getexif().get(_ORIENTATION) in _TRANSPOSED:
        return height, width
    return width, height


def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) of an opened PIL image, or of an array already decoded elsewhere
    ((H, W) or (H, W, C), uint8 or 16-bit), by the rules of this module."""
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[-1] == 3 and array.dtype == np.uint8:
            return array
        image = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
    image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_GREY:
        wide = np.asarray(image, np.float64)
        grey = np.clip(np.rint(wide * (255 / 65535)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        page = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return np.asarray(Image.alpha_composite(page, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def decode(file: str | os.PathLike | bytes) -> np.ndarray:
    """uint8 (H, W, 3) of an image file, given by its path or its encoded bytes."""
    if isinstance(file, bytes):
        file = io.BytesIO(file)
    with Image.open(file) as image:
        return to_rgb(image)
