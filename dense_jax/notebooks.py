"""The few calls the reproduction notebooks (``notebooks/*.ipynb``) make, so that their cells
stay short: the mode, the repository root, configs with overrides, evaluation, training and
staged pipelines in the notebook's own process, and PNG display.

Modes (``DENSE_JAX_NOTEBOOK_MODE``): ``scenes`` runs everything on the built-in procedural
data and the shipped scenes backbone with nothing downloaded (what CI executes); ``data``
uses the official weights and datasets under the notebook's ``DATA`` folder (e.g. a mounted
Google Drive).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

MODES = ("scenes", "data")


def mode() -> str:
    """``DENSE_JAX_NOTEBOOK_MODE`` (default ``scenes``), checked."""
    value = os.environ.get("DENSE_JAX_NOTEBOOK_MODE", "scenes")
    if value not in MODES:
        raise ValueError(f"DENSE_JAX_NOTEBOOK_MODE={value!r}; use one of {MODES}")
    return value


def repo_root(start: str | None = None) -> str:
    """Change to the dense_jax checkout that holds `start` (default: the working directory) or
    one of its parents, and return it: the configs are files of the repository."""
    path = os.path.abspath(start or os.getcwd())
    while True:
        if os.path.isdir(os.path.join(path, "configs")) and os.path.isdir(os.path.join(path, "dense_jax")):
            os.chdir(path)
            return path
        parent = os.path.dirname(path)
        if parent == path:
            raise FileNotFoundError(
                "no dense_jax checkout above the working directory: clone the repository and open "
                "the notebook from it (Colab: the first cell clones it to /content/dense_jax)"
            )
        path = parent


def require(path: str, what: str) -> str:
    """`path` if it exists, else one clear error saying what to put there."""
    if not os.path.exists(os.path.expanduser(path)):
        raise FileNotFoundError(f"{what} not found at {path}: put it there (docs/data.md, docs/reproduce.md)")
    return os.path.expanduser(path)


def config(spec: str, **overrides: Any):
    """The config of ``path[:variants]`` with ``overrides`` given as dotted field names
    (``config("configs/eval/kmeans_voc.py:demo", **{"data.limit_val": 16})``)."""
    from dense_jax.core.config_files import config_from_file

    c = config_from_file(spec)
    c.update_from_flattened_dict(overrides)
    return c


def _clear(workdir: str, fresh: bool) -> None:
    if fresh and os.path.isdir(workdir):
        shutil.rmtree(workdir)


def evaluate(spec: str, workdir: str, fresh: bool = True, **overrides: Any) -> dict:
    """Run the evaluation config `spec` (with `overrides`) in `workdir`; returns the results
    (``{protocol: {"summary": {...}, ...}}``) after printing the table."""
    from dense_jax import evaluate as cli

    _clear(workdir, fresh)
    return cli.evaluate(config(spec, **overrides), workdir)


def train(spec: str, workdir: str, fresh: bool = False, **overrides: Any) -> list[dict]:
    """Train `spec` in `workdir` as ``python -m dense_jax.main`` does (resuming when the workdir
    has a checkpoint, unless `fresh`); returns the ``metrics.jsonl`` records."""
    from dense_jax import main
    from dense_jax.eval import report

    _clear(workdir, fresh)
    main.train(config(spec, **overrides), workdir)
    return report.read_jsonl(os.path.join(workdir, "metrics.jsonl"))


def pipeline(spec: str, workdir: str, fresh: bool = False, **overrides: Any) -> dict:
    """Run the staged pipeline `spec` (COMUS, ``dense_jax.methods.PIPELINES``) in `workdir` as
    ``python -m dense_jax.main`` does (resuming at its first missing stage, unless `fresh`);
    returns its ``results.json`` results (``summary`` holds the scores)."""
    import json

    from dense_jax import main

    _clear(workdir, fresh)
    main.train(config(spec, **overrides), workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)["results"]


def show(*paths: str, width: int | None = None) -> list[str]:
    """Display the PNGs at `paths` (IPython) and return the ones that exist."""
    from IPython.display import Image, display

    found = [p for p in paths if os.path.isfile(p)]
    for path in paths:
        if path in found:
            print(path)
            display(Image(filename=path, width=width))
        else:
            print(f"missing: {path}")
    return found
