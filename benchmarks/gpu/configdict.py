"""A pure-Python stand-in for ``ml_collections`` when the package is absent (the GPU machine).

The config files build ``mlc.ConfigDict`` trees; the GPU suite only reads them, so attribute
and item access, nested-dict conversion, ``get`` / ``update`` / ``items`` / ``to_dict`` are
all it needs. `install` registers this module as ``ml_collections`` only if the real package
cannot be imported; with the package present nothing changes.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class ConfigDict:
    """Attribute-access dict; dict values become ConfigDicts (as in ml_collections)."""

    def __init__(self, initial: dict | ConfigDict | None = None):
        object.__setattr__(self, "_fields", {})
        for key, value in dict(initial.items() if initial is not None else {}).items():
            self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        self._fields[key] = ConfigDict(value) if isinstance(value, dict) else value

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __getattr__(self, key: str) -> Any:
        try:
            return self._fields[key]
        except KeyError:
            raise AttributeError(key) from None

    def __contains__(self, key: str) -> bool:
        return key in self._fields

    def __iter__(self):
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"ConfigDict({self.to_dict()!r})"

    def get(self, key: str, default: Any = None) -> Any:
        return self._fields.get(key, default)

    def keys(self):
        return self._fields.keys()

    def items(self):
        return self._fields.items()

    def values(self):
        return self._fields.values()

    def update(self, other: dict | ConfigDict) -> None:
        for key, value in other.items():
            if isinstance(value, (dict, ConfigDict)) and isinstance(self.get(key), ConfigDict):
                self[key].update(value)
            else:
                self[key] = value

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, ConfigDict) else v for k, v in self._fields.items()}


def install() -> str:
    """Make ``import ml_collections`` work; returns which implementation is in use."""
    try:
        import ml_collections  # noqa: F401

        return "ml_collections"
    except ImportError:
        module = types.ModuleType("ml_collections")
        module.ConfigDict = ConfigDict
        sys.modules["ml_collections"] = module
        return "benchmarks.gpu.configdict (ml_collections not installed)"
