"""Config files given as ``path[:variants]`` (what ``--config`` takes), loaded by path."""

from __future__ import annotations

import importlib.util
import os


def config_from_file(spec: str):
    """``get_config(arg)`` of a config file given as ``path[:arg]``."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    module_spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)
