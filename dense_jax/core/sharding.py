"""Mesh, logical-axis rules and shardings of the train state and batches (jax-practices §2).

Parameters carry logical axis names ("embed", "mlp", "qkv", "heads", "vocab", "norm");
one rules table maps them onto the ('data', 'model') mesh. Data parallel by default
(embed replicated, mlp/qkv/heads/vocab over 'model', which has size 1 unless the mesh
says otherwise); ``config.mesh.fsdp`` also shards "embed" over 'data'. Non-parameter state
(method aux leaves) may use the logical name "batch" for a leading axis split over 'data'.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dense_jax.core.errors import ConfigError

MESH_AXES = ("data", "model")


def logical_rules(fsdp: bool) -> tuple[tuple[str, str | None], ...]:
    """The single logical → mesh table."""
    return (
        ("batch", "data"),
        ("embed", "data" if fsdp else None),
        ("mlp", "model"),
        ("qkv", "model"),
        ("heads", "model"),
        ("vocab", "model"),
        ("norm", None),
    )


def make_mesh(shape) -> Mesh:
    """('data', 'model') mesh with Auto axes; one -1 entry takes the remaining devices."""
    shape = list(shape)
    n = jax.device_count()
    if shape.count(-1) > 1:
        raise ConfigError(f"mesh.shape={tuple(shape)}: at most one -1")
    if -1 in shape:
        rest = int(np.prod([s for s in shape if s != -1]))
        shape[shape.index(-1)] = n // rest
    if int(np.prod(shape)) > n:
        raise ConfigError(
            f"mesh.shape={tuple(shape)} needs {int(np.prod(shape))} devices, but this machine has {n} "
            f"({jax.devices()[0].platform}); use -1 for the axis that takes the remaining devices"
        )
    devices = jax.devices()[: int(np.prod(shape))]
    return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis over 'data', the rest replicated."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def logical_to_mesh(boxed_abstract: Any, mesh: Mesh, rules) -> Any:
    """NamedShardings for a tree whose leaves may be `nn.Partitioned` boxes (P() otherwise)."""
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed_abstract), mesh, rules)


def like_params(tree: Any, params: Any, param_shardings: Any, default: NamedSharding) -> Any:
    """Shardings for a tree that embeds copies of the params (e.g. an optax state).

    A leaf whose key path ends with a parameter's key path and has its shape gets that
    parameter's sharding (Adam moments, however the optimizer nests them); any other leaf
    (counters, scalars) gets `default`.
    """
    table = {}
    for (path, leaf), sharding in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(param_shardings)
    ):
        table[tuple(path)] = (leaf.shape, sharding)

    def pick(path, leaf):
        for start in range(len(path)):
            entry = table.get(tuple(path[start:]))
            if entry is not None and entry[0] == leaf.shape:
                return entry[1]
        return default

    return jax.tree_util.tree_map_with_path(pick, tree)


def to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This host's rows → global arrays split over 'data' (jax-practices §6).

    The one intended host→device transfer of the loop: allowed explicitly, since with
    several processes it goes through a path the loop's transfer guard would reject.
    """
    with jax.transfer_guard_host_to_device("allow"):
        return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def to_host(tree: Any) -> Any:
    """Device arrays → numpy, whole: ``device_get`` on one process; with several, each host
    gathers every shard (``process_allgather``), so all hosts hold the same global values."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
