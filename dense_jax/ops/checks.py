"""Argument checks shared by the public ops: each raises a ValueError that names the argument,
at the boundary, before anything is traced (a zero chunk would otherwise surface as a
ZeroDivisionError, mismatched widths as an XLA shape error)."""

from __future__ import annotations

from typing import Sequence


def positive(name: str, value, minimum: int = 1) -> int:
    """`value` as an int, if it is an integer >= `minimum`."""
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def sizes(name: str, value) -> tuple[int, int]:
    """An int or (h, w) pair of positive sizes, as (h, w)."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or an (h, w) pair, got {value!r}")
    return positive(name, pair[0]), positive(name, pair[1])


def ndim(name: str, array, expected: int, layout: str) -> None:
    if array.ndim != expected:
        raise ValueError(f"{name} must be {layout} ({expected}-D), got shape {tuple(array.shape)}")


def same_width(names: Sequence[str], *arrays) -> None:
    """The last axes of `arrays` (the feature widths) agree."""
    widths = [a.shape[-1] for a in arrays]
    if len(set(widths)) > 1:
        shown = ", ".join(f"{n} {tuple(a.shape)}" for n, a in zip(names, arrays))
        raise ValueError(f"feature widths differ: {shown}")
