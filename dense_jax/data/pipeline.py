"""grain input pipeline for SSL training (jax-practices §6; croc.md §2).

Global stream: source → global shuffle (reshuffled each epoch, seeded) → repeat → multi-crop
`random_map` (per-element RNG from the seed and the global position, so augmentations do
not depend on the host count). Then `HostShard` picks this host's rows of every global
batch, as DINO's ``DistributedSampler`` + ``drop_last`` loader would, and batches them.
Host p holds rows [p·b, (p+1)·b) of the global batch (b = batch / hosts), so the global
array assembled by `jax.make_array_from_process_local_data` is the same for any number of
hosts. The iterator's state (grain ``get_state``) goes into the checkpoint.
"""

from __future__ import annotations

import sys

import grain
import ml_collections as mlc

from dense_jax.data.sources import Source
from dense_jax.data.transforms import MultiCropSpec, MultiCropTransform

# Fields of a batch that stay on the host (not passed to the step).
HOST_KEYS = ("index", "skipped")


class HostShard(grain.MapDataset):
    """Host `process_index`'s elements of the global batch stream, in step order.

    Local element k is row p·b + k mod b of global step s = k // b; step s of epoch
    e = s // steps_per_epoch reads shuffled position s mod steps_per_epoch · batch + row of
    that epoch, so the last ``len(source) mod batch`` images of each epoch are dropped.
    """

    def __init__(
        self,
        parent: grain.MapDataset,
        epoch_size: int,
        steps_per_epoch: int,
        global_batch: int,
        process_index: int,
        process_count: int,
    ):
        super().__init__(parent)
        self.epoch_size, self.steps_per_epoch = epoch_size, steps_per_epoch
        self.global_batch = global_batch
        self.local_batch = global_batch // process_count
        self.offset = process_index * self.local_batch

    def __len__(self) -> int:
        return sys.maxsize

    def global_position(self, index: int) -> int:
        step, row = divmod(index, self.local_batch)
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        return epoch * self.epoch_size + step_in_epoch * self.global_batch + self.offset + row

    def __getitem__(self, index):
        return self._parent[self.global_position(index)]

    def __str__(self) -> str:
        return (
            f"HostShard(rows {self.offset}..{self.offset + self.local_batch} of "
            f"{self.global_batch}, {self.steps_per_epoch} steps/epoch)"
        )


def crop_spec(config: mlc.ConfigDict) -> MultiCropSpec:
    """`MultiCropSpec` from ``config.crops`` (any MultiCropSpec field may appear there) and
    ``config.data.device_photometric``."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config.crops.to_dict().items()}
    return MultiCropSpec(**fields, device_photometric=config.data.device_photometric)


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
    """len(loader) of DINO's drop_last loader."""
    steps = num_examples // global_batch
    if steps == 0:
        raise ValueError(f"the dataset has {num_examples} images, fewer than one batch of {global_batch}")
    return steps


def build(
    config: mlc.ConfigDict,
    source: Source,
    process_index: int,
    process_count: int,
    transform: grain.transforms.RandomMap | None = None,
) -> grain.IterDataset:
    """This host's batches for a resolved config; iterate with ``iter(...)``.

    `transform`: the per-element random map (a method's own input); default the multi-crop
    transform of ``config.crops``."""
    batch = config.data.batch_size
    if batch % process_count:
        raise ValueError(f"data.batch_size={batch} is not divisible by {process_count} hosts")
    transform = transform or MultiCropTransform(crop_spec(config))
    stream = grain.MapDataset.source(source).seed(config.seed).shuffle().repeat(None).random_map(transform)
    local = HostShard(stream, len(source), config.train.steps_per_epoch, batch, process_index, process_count)
    dataset = local.batch(batch // process_count, drop_remainder=True).to_iter_dataset()
    if config.data.workers > 0:
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.workers))
    return dataset
