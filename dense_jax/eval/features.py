"""Frozen-backbone dense features over a segmentation source (evaluation.md §0).

A *segmentation source* is any random-access object with ``__len__`` and ``__getitem__ ->
{"image": uint8 (H, W, 3), "mask": uint8 (H, W), "id": str}`` (the dataset readers of
``dense_jax.data.segmentation`` and ``dense_jax.data.sources.Scenes``, the built-in scenes).

:class:`Extractor` jits the backbone once per input shape with the batch split over the mesh
axis ``'data'`` (params replicated). :func:`batches` pads the last batch to the full batch size
and marks the padding in ``valid`` (jax-practices §5). :func:`extract` runs the eval transform
(squash to S×S, ImageNet mean/std, masks nearest), keeps the requested outputs (last-block patch
tokens, concatenated last blocks, head-averaged CLS attention) and the labels at the protocol's
resolution, and optionally caches everything in one ``.npz`` (only for un-augmented passes).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dense_jax.core.errors import ReportedError
from dense_jax.core.sharding import to_host
from dense_jax.data.sources import Scenes, Subset
from dense_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from dense_jax.eval.report import to_uint8
from dense_jax.models.features import select
from dense_jax.ops.resize import nearest_resize

BackboneFn = Callable[[Any, jax.Array], Mapping[str, jax.Array]]


# ----------------------------------------------------------------------------- sources
class MissingSamplesError(ReportedError, ValueError):
    """Listed samples of an evaluation split cannot be used, and ``data.allow_missing`` is off."""


def open_source(data, split: str, limit: int = 0):
    """The segmentation source of ``data`` (a config section) and ``split``: the built-in scenes
    (`sources.Scenes`) or ``dense_jax.data.segmentation.open_source``'s reader; the first
    ``limit`` items when ``limit > 0``. A dataset that is not on disk raises the readers' own
    ``DatasetNotFoundError`` naming what to download.

    No silent subsets: listed samples the reader had to leave out (a missing image or mask, a
    mask of the wrong size; not those excluded.txt leaves out on purpose) raise
    `MissingSamplesError` with their count and reasons, or with ``data.allow_missing`` are
    logged as a warning and the rest is evaluated."""
    if data.name == "scenes":
        return Scenes(split, limit or None, data.image_size, style=data.scenes_style)
    from dense_jax.data import segmentation  # lazy: file readers of the real datasets

    source = segmentation.open_source(data.name, split, data.root)
    excluded = set(source.excluded)
    dropped = [(key, reason) for key, reason in source.skipped if key not in excluded]
    if dropped:
        listed = len(source) + len(dropped)
        reasons = "; ".join(f"{key}: {reason}" for key, reason in dropped[:5])
        message = (
            f"{data.name} {split}: {len(dropped)} of {listed} listed samples cannot be used ({reasons}"
            f"{'; ...' if len(dropped) > 5 else ''})"
        )
        if not data.allow_missing:
            raise MissingSamplesError(
                f"{message}. Fix the files, or set --config.data.allow_missing=True to score the rest"
            )
        logging.warning("%s; data.allow_missing: evaluating the other %d", message, len(source))
    return Subset(source, range(min(limit, len(source)))) if limit else source


# ----------------------------------------------------------------------------- batching
def pad_batch(batch: dict, size: int) -> dict:
    n = len(batch["valid"])
    if n == size:
        return batch
    out = {}
    for key, value in batch.items():
        pad = np.zeros((size - n,) + value.shape[1:], value.dtype)
        out[key] = np.concatenate([value, pad])
    return out


def batches(
    source,
    transform: Callable,
    batch_size: int,
    *,
    seed: int | None = None,
    shuffle: bool = False,
    workers: int = 0,
) -> Iterator[dict]:
    """Host batches of ``transform(item)`` (or ``transform(item, rng)`` when ``seed`` is given,
    a grain ``random_map``: the draw depends only on (seed, index)). Every batch has
    ``batch_size`` rows; ``valid`` (bool) marks the real ones (the last batch is zero-padded)."""
    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed)
    ds = ds.random_map(transform, seed=seed) if seed is not None else ds.map(transform)
    ds = ds.map(_mark_valid).batch(batch_size).to_iter_dataset()
    if workers:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    for batch in ds:
        yield pad_batch(batch, batch_size)


def _mark_valid(item: dict) -> dict:
    return {**item, "valid": np.bool_(True)}


def eval_item(item: dict, size: int, label_size: int | None, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict:
    """§0 preprocessing of one item: image squashed to size², normalised; mask nearest to
    size² (PIL), then torch-nearest to ``label_size``² when given."""
    image, mask = eval_transform(item["image"], item["mask"], size, mean, std)
    if label_size and label_size != size:
        mask = nearest_resize(mask, label_size)
    return {"image": image, "mask": mask}


# ----------------------------------------------------------------------------- extraction
def on_mesh(params, mesh: Mesh):
    """`params` placed on `mesh`: device arrays already there (e.g. the trainer's, FSDP-sharded)
    stay as they are; anything else is replicated."""
    leaves = jax.tree.leaves(params)
    if leaves and all(isinstance(x, jax.Array) and getattr(x.sharding, "mesh", None) == mesh for x in leaves):
        return params
    return jax.device_put(params, NamedSharding(mesh, P()))


class Extractor:
    """Jitted frozen backbone: images (B, S, S, 3) -> {kind: array}, batch over ``'data'``,
    params where they are (see `on_mesh`)."""

    def __init__(
        self,
        backbone_fn: BackboneFn,
        params,
        mesh: Mesh,
        kinds: Sequence[str] = ("patch",),
        n_blocks: int = 4,
    ):
        self.backbone_fn, self.mesh, self.kinds = backbone_fn, mesh, tuple(kinds)
        self.n_blocks = n_blocks
        self.batch_sharding = NamedSharding(mesh, P("data"))
        self.params = on_mesh(params, mesh)

        def run(p, images):
            out = backbone_fn(p, images)
            return {k: select(out, k, n_blocks).astype(jnp.float32) for k in self.kinds}

        self._fn = jax.jit(run, out_shardings=self.batch_sharding)

    @property
    def data_size(self) -> int:
        return self.mesh.shape["data"]

    def batch_size(self, requested: int) -> int:
        """``requested`` rounded up to a multiple of the data-parallel size."""
        return -(-requested // self.data_size) * self.data_size

    def to_device(self, array: np.ndarray) -> jax.Array:
        return jax.device_put(array, self.batch_sharding)

    def __call__(self, images) -> dict[str, jax.Array]:
        return self._fn(self.params, self.to_device(images))

    def patch_size(self, size: int) -> int:
        """Patch size P read off the backbone's output grid for an S×S input (S = P·g)."""
        shape = jax.eval_shape(
            self.backbone_fn, self.params, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
        )["patch"].shape
        return size // shape[1]


def fingerprint(params) -> str:
    """Short hash of the parameter values (feature-cache key)."""
    digest = hashlib.sha1()
    for leaf in jax.tree.leaves(jax.device_get(params)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()[:12]


def extract(
    extractor: Extractor,
    source,
    *,
    size: int,
    label_size: int | None,
    batch_size: int,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    workers: int = 0,
    n_show: int = 0,
    cache: str = "",
) -> dict[str, np.ndarray]:
    """Features of every item of ``source`` (no augmentation), on the host.

    Returns ``{kind: (N, h, w[, D]) float32 for each extractor kind, "labels": (N, L, L) uint8
    at label_size (size when None), "ids": (N,) str, "show": (n_show, S, S, 3) uint8}``.
    ``cache``: an ``.npz`` path; read when it exists, else written after extraction.
    """
    if cache and os.path.exists(cache):
        with np.load(cache) as f:
            return {k: f[k] for k in f.files}
    bs = extractor.batch_size(batch_size)
    chunks: dict[str, list] = {k: [] for k in extractor.kinds + ("labels", "ids", "show")}
    item = functools.partial(_eval_with_id, size=size, label_size=label_size, mean=mean, std=std)
    for batch in batches(source, item, bs, workers=workers):
        n = int(batch["valid"].sum())
        out = to_host(extractor(batch["image"]))
        for k in extractor.kinds:
            chunks[k].append(out[k][:n])
        chunks["labels"].append(batch["mask"][:n])
        chunks["ids"].append(batch["id"][:n])
        shown = sum(len(c) for c in chunks["show"])
        if shown < n_show:
            chunks["show"].append(to_uint8(batch["image"][: min(n, n_show - shown)], mean, std))
    result = {k: np.concatenate(v) if v else np.zeros((0,), np.uint8) for k, v in chunks.items()}
    if cache:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        np.savez(cache, **result)
    return result


def _eval_with_id(item: dict, size: int, label_size: int | None, mean, std) -> dict:
    return {**eval_item(item, size, label_size, mean, std), "id": np.asarray(str(item["id"]))}


@dataclasses.dataclass
class EvalContext:
    """What every protocol driver gets: the frozen backbone, the evaluation config, the mesh,
    the output workdir (None: write nothing), the trainer for protocols that train, and a
    per-run memo of extracted features."""

    backbone_fn: BackboneFn
    params: Any
    config: Any
    mesh: Mesh
    workdir: str | None = None
    # The training loop for protocols that train (the linear probe): ``fit(train_config,
    # method, source, workdir, backbone_params) -> state``, handed in by the CLIs.
    fit: Callable | None = None
    model_config: dict | None = None  # the backbone's {"variant": ..., overrides}, when known
    _extractors: dict = dataclasses.field(default_factory=dict)
    _dense: dict = dataclasses.field(default_factory=dict)
    _fingerprint: str = ""

    def extractor(self, kinds: Sequence[str] = ("patch",), n_blocks: int = 4) -> Extractor:
        key = (tuple(kinds), n_blocks)
        if key not in self._extractors:
            self._extractors[key] = Extractor(self.backbone_fn, self.params, self.mesh, kinds, n_blocks)
        return self._extractors[key]

    def source(self, split: str, limit: int = 0):
        return open_source(self.config.data, split, limit)

    def dense(
        self,
        split: str,
        *,
        size: int,
        label_size: int | None,
        limit: int = 0,
        kinds: Sequence[str] = ("patch",),
        n_blocks: int = 4,
    ) -> dict[str, np.ndarray]:
        """:func:`extract` of a whole split, memoised for this run and cached on disk under
        ``config.cache_dir`` (keyed by dataset, split, sizes, kinds and a hash of the params)."""
        key = (split, size, label_size, limit, tuple(kinds), n_blocks)
        if key not in self._dense:
            cache = ""
            if self.config.cache_dir:
                if not self._fingerprint:
                    self._fingerprint = fingerprint(self.params)
                name = (
                    f"{self.config.data.name}_{split}_{limit or 'all'}_{size}_{label_size}_"
                    f"{'-'.join(kinds)}{n_blocks}_{self._fingerprint}.npz"
                )
                cache = os.path.join(self.config.cache_dir, name)
            self._dense[key] = extract(
                self.extractor(kinds, n_blocks),
                self.source(split, limit),
                size=size,
                label_size=label_size,
                batch_size=self.config.input.batch_size,
                mean=self.config.input.mean,
                std=self.config.input.std,
                workers=self.config.input.workers,
                n_show=self.config.output.n_show,
                cache=cache,
            )
        return self._dense[key]

    def path(self, *parts: str) -> str | None:
        """A path under the workdir, or None when nothing is written."""
        return os.path.join(self.workdir, *parts) if self.workdir else None
