"""DAVIS-2017 video object segmentation, one sample per sequence."""

from __future__ import annotations

import numpy as np

from dense_jax.data import shipped_lists
from dense_jax.data.segmentation.base import (
    _INDEX_MODES,
    _READ_ERRORS,
    IGNORE_INDEX,
    _descend,
    _header,
    _probe_pair,
    _read_image,
    _read_index_png,
    _read_lines,
    _require,
    _Source,
)

_DAVIS_HELP = """
Download https://data.vision.ee.ethz.ch/csergi/share/davis/DAVIS-2017-trainval-480p.zip.
Expected layout:
  <root>/                              (= DAVIS, or its parent)
    JPEGImages/480p/<sequence>/00000.jpg ...
    Annotations/480p/<sequence>/00000.png ...   palette PNG: 0 bg, 1..N objects, 255 void
    ImageSets/2017/{train,val}.txt
"""


class DAVIS2017(_Source):
    """DAVIS-2017 semi-supervised VOS, one sample per sequence (evaluation.md §4, §5).

    ``reader[i]`` -> {"image": uint8 (T, H, W, 3), "mask": uint8 (T, H, W), "id": sequence,
    "frame_ids": tuple of frame names, "num_objects": N} with frames in sorted file order and
    N = the largest object id in the first annotation (255 = void is not an object). A sequence
    with any unreadable or mis-sized file is skipped as a whole. A copy of the public val split
    is listed by the shipped list (`dense_jax.data.shipped_lists`): a sequence it lacks counts
    as missing.
    """

    name, group, splits = "DAVIS 2017", "davis2017", ("train", "val")

    def __init__(
        self,
        root,
        split: str = "val",
        *,
        resolution: str = "480p",
        ids=None,
        subset=None,
        check_files: bool = True,
        lists_dir=None,
    ):
        self._check_split(split)
        davis = _descend(root, "DAVIS", "JPEGImages")
        frames_dir, masks_dir = davis / "JPEGImages" / resolution, davis / "Annotations" / resolution
        split_file = davis / "ImageSets" / "2017" / f"{split}.txt"
        _require(self.name, root, [frames_dir, masks_dir, split_file], _DAVIS_HELP)
        entries, skipped = {}, {}
        for seq in shipped_lists.listing(self.group, split, _read_lines(split_file)):
            frames = sorted((frames_dir / seq).glob("*.jpg"))
            if not frames:
                skipped[seq] = f"no frames in {frames_dir / seq}"
                continue
            entries[seq] = [(f, masks_dir / seq / f"{f.stem}.png") for f in frames]
        self._setup(
            davis,
            split,
            entries,
            skipped,
            ids=ids,
            subset=subset,
            check_files=check_files,
            lists_dir=lists_dir,
        )

    def _probe(self, pairs) -> str | None:
        sizes = set()
        for image, mask in pairs:
            reason = _probe_pair(image, mask, _INDEX_MODES)
            if reason is not None:
                return reason
            sizes.add(_header(image))
        return None if len(sizes) == 1 else f"frames of different sizes {sorted(sizes)}"

    def __getitem__(self, index) -> dict:
        index = self._check_index(index)
        images, masks = [], []
        for image_path, mask_path in self._entries[index]:
            for path, reader, out in ((image_path, _read_image, images), (mask_path, _read_index_png, masks)):
                try:
                    out.append(reader(path))
                except _READ_ERRORS as err:
                    raise self._unreadable(path, err) from err
            if masks[-1].shape != images[-1].shape[:2] or images[-1].shape != images[0].shape:
                raise self._unreadable(mask_path, "frame/mask sizes differ within the sequence")
        first = masks[0]
        objects = first[first != IGNORE_INDEX]
        return {
            "image": np.stack(images),
            "mask": np.stack(masks),
            "id": self.ids[index],
            "frame_ids": tuple(p.stem for p, _ in self._entries[index]),
            "num_objects": int(objects.max()) if objects.size else 0,
        }
