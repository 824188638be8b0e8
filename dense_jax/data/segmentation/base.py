"""What every dataset reader shares: id selection, excluded and skipped bookkeeping, header
checks (`_Source`), the image/mask reader (`SegmentationSource`), mask decoding and the
missing-dataset error."""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io
from PIL import Image

from dense_jax.core.errors import ReportedError
from dense_jax.data import images, lists

IGNORE_INDEX = 255

_INDEX_MODES = ("P", "L")  # palette or grayscale PNG: the pixel values are the label indices
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, KeyError, AttributeError)
_WORKERS = min(16, 4 * (os.cpu_count() or 1))  # header checks are I/O bound


class UnreadableSampleError(ReportedError, RuntimeError):
    """A file of the dataset cannot be decoded, or decodes to something that is not a sample."""


# ---------------------------------------------------------------------------- helpers


def _make_lut(pairs) -> np.ndarray:
    """int16 (256,) lookup raw value -> label; values not in `pairs` are invalid (-1)."""
    lut = np.full(256, -1, np.int16)
    for raw, label in pairs:
        lut[raw] = label
    return lut


def _missing(name: str, root, missing: Sequence[Path], help_text: str) -> FileNotFoundError:
    paths = "\n".join(f"  {p}" for p in missing)
    return FileNotFoundError(
        f"{name} not found under root {str(root)!r}. Missing:\n{paths}\n{help_text.strip()}\n"
        "dense_jax never downloads data: fetch the files above and point `root` at them."
    )


def _require(name: str, root, paths: Sequence[Path], help_text: str) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise _missing(name, root, missing, help_text)


def _descend(root, child: str, marker: str) -> Path:
    """The dataset folder `child`: `root` itself if it holds `marker`, else root/child."""
    root = Path(root)
    return root if (root / marker).exists() else root / child


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read_image(path: Path) -> np.ndarray:
    return images.decode(path)


def _read_index_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode not in _INDEX_MODES:
            raise ValueError(f"mask mode {im.mode!r} is not a label-index PNG (expected P or L)")
        return np.array(im)


def _read_sbd_mat(path: Path) -> np.ndarray:
    """SBD ``cls/<id>.mat``: struct GTcls with field Segmentation (uint8 class ids)."""
    mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    return np.asarray(mat["GTcls"].Segmentation, np.uint8)


def _header(path: Path, modes: Sequence[str] | None = None) -> tuple[int, int]:
    """(W, H) from the file header: a mask's (mode checked against `modes`) or, without
    `modes`, an image's as shown upright (EXIF orientation applied, as `images.decode` does)."""
    if path.suffix == ".mat":
        h, w = _read_sbd_mat(path).shape
        return w, h
    with Image.open(path) as im:
        if modes is None:
            return images.oriented_size(im)
        if im.mode not in modes:
            raise ValueError(f"mask mode {im.mode!r}, expected one of {tuple(modes)}")
        return im.size


def _probe_pair(image: Path, mask: Path, mask_modes: Sequence[str]) -> str | None:
    """Why the (image, mask) pair is unusable, from headers only; None if it looks fine."""
    for path, kind in ((image, "image"), (mask, "mask")):
        if not path.is_file():
            return f"missing {kind} file {path}"
    try:
        image_size = _header(image)
    except _READ_ERRORS as err:
        return f"unreadable image {image}: {err}"
    try:
        mask_size = _header(mask, mask_modes)
    except _READ_ERRORS as err:
        return f"unreadable mask {mask}: {err}"
    if mask_size != image_size:
        (mw, mh), (iw, ih) = mask_size, image_size
        return f"mask {mask} is {mw}x{mh} but image {image} is {iw}x{ih}"
    return None


# ---------------------------------------------------------------------------- base


class _Source:
    """Shared machinery: id selection, excluded/skipped bookkeeping, header checks."""

    name: str  # for messages
    group: str  # directory under the lists dir (excluded.txt, prepared lists)
    splits: tuple[str, ...]

    def _setup(self, home, split, entries: dict, skipped: dict, *, ids, subset, check_files, lists_dir):
        """`home`: the dataset's own folder (lists live in <home>/dense_jax_lists by default);
        `entries`: id -> whatever `_probe`/`__getitem__` need; `skipped`: id -> reason.

        Sets ``ids`` (the usable samples), ``skipped`` ((id, reason) of every listed sample left
        out) and ``excluded`` (the skipped ids that excluded.txt leaves out on purpose)."""
        self.root, self.split = Path(home), split
        self.lists_dir = lists.lists_dir(home, lists_dir)
        if subset is not None:
            if ids is not None:
                raise ValueError("pass either ids= or subset=, not both")
            ids = lists.load(self.lists_dir, self.group, subset)
        if ids is not None:
            wanted = set(ids)
            unknown = sorted(wanted - set(entries) - set(skipped))
            if unknown:
                raise ValueError(
                    f"{self.name} {split}: {len(unknown)} requested ids are not in "
                    f"the split, e.g. {unknown[:5]}"
                )
            entries = {k: v for k, v in entries.items() if k in wanted}
            skipped = {k: v for k, v in skipped.items() if k in wanted}
        excluded = lists.read_excluded(lists.list_path(self.lists_dir, self.group, "excluded"))
        self.excluded = tuple(sorted(set(entries) & set(excluded)))
        for key in self.excluded:
            skipped[key] = f"excluded by {self.lists_dir}/{self.group}/excluded.txt: {excluded[key]}"
            del entries[key]
        if check_files:
            keys = sorted(entries)
            with concurrent.futures.ThreadPoolExecutor(_WORKERS) as pool:
                reasons = list(pool.map(lambda k: self._probe(entries[k]), keys))
            for key, reason in zip(keys, reasons):
                if reason is not None:
                    skipped[key] = reason
                    del entries[key]
        self.ids = tuple(sorted(entries))
        self._entries = [entries[k] for k in self.ids]
        self.skipped = tuple(sorted(skipped.items()))

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"{self.name}: split must be one of {self.splits}, got {split!r}")

    def _probe(self, entry) -> str | None:
        raise NotImplementedError

    def _check_index(self, index) -> int:
        index = int(index)
        if not 0 <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} samples")
        return index

    def _unreadable(self, path, err) -> UnreadableSampleError:
        return UnreadableSampleError(
            f"{self.name}: cannot use {path}: {err}. To skip every such file, run "
            f"`python -m dense_jax.prepare --dataset {self.group} --root {self.root} --verify` "
            f"(writes {lists.list_path(self.lists_dir, self.group, 'excluded')})."
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.root)!r}, {self.split!r}: {len(self)} samples, "
            f"{len(self.skipped)} skipped)"
        )


class SegmentationSource(_Source):
    """An image/mask dataset. Entries are (image path, mask path); `_lut` maps raw mask values."""

    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    _mask_modes: tuple[str, ...] = _INDEX_MODES
    _lut: np.ndarray  # int16 (256,), -1 = a value that must not occur

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _probe(self, entry) -> str | None:
        return _probe_pair(*entry, self._mask_modes)

    def _raw_mask(self, index: int, path: Path) -> np.ndarray:
        return _read_sbd_mat(path) if path.suffix == ".mat" else _read_index_png(path)

    def read_mask(self, index) -> np.ndarray:
        """uint8 (H, W) labels of sample `index` (no image decode)."""
        index = self._check_index(index)
        path = self._entries[index][1]
        try:
            raw = self._raw_mask(index, path)
        except _READ_ERRORS as err:
            raise self._unreadable(path, err) from err
        labels = self._lut[raw]
        if (labels < 0).any():
            bad = np.unique(raw[labels < 0])[:10].tolist()
            raise self._unreadable(path, f"mask values {bad} are not labels of {self.name}")
        return labels.astype(np.uint8)

    def __getitem__(self, index) -> dict:
        index = self._check_index(index)
        image_path = self._entries[index][0]
        try:
            image = _read_image(image_path)
        except _READ_ERRORS as err:
            raise self._unreadable(image_path, err) from err
        mask = self.read_mask(index)
        if mask.shape != image.shape[:2]:
            raise self._unreadable(
                self._entries[index][1], f"mask shape {mask.shape} != image shape {image.shape[:2]}"
            )
        return {"image": image, "mask": mask, "id": self.ids[index]}
