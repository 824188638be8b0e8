"""In-memory arrays as a training source (e.g. cached frozen features for a linear probe)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


class ArraySource:
    """Element i = ``{key: arrays[key][i]}`` plus its ``index``; all arrays share length N."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        lengths = {len(v) for v in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"arrays of different lengths: { {k: len(v) for k, v in arrays.items()} }")
        self.arrays = dict(arrays)
        self.length = lengths.pop()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**{k: v[index] for k, v in self.arrays.items()}, "index": index}
