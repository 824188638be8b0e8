"""Who this process is in a multi-process run, and `jax.distributed` set up from it (launch/README.md).

`resolve(env)` reads the environment once, in this order:

1. explicit: ``DENSE_JAX_COORDINATOR`` (host:port), ``DENSE_JAX_NUM_PROCESSES``,
   ``DENSE_JAX_PROCESS_ID`` and optionally ``DENSE_JAX_LOCAL_DEVICE_IDS`` ("0,1"): any launcher;
2. SLURM, inside ``srun`` (``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``, ``SLURM_PROCID``, ...): the
   coordinator is the step's first node at port ``JAX_COORDINATOR_PORT`` or, as JAX picks it,
   61440 + job id mod 4096. One process per node or per GPU both work: this process takes its
   share of the node's GPUs (all of them with one task per node). JAX's own SLURM detection
   gives every process the single GPU ``SLURM_LOCALID``, which leaves 7 of 8 GPUs idle when
   one process drives a whole node; that is why the devices are named here
   (``DENSE_JAX_LOCAL_DEVICE_IDS`` overrides them);
3. anything else (Cloud TPU VMs, Kubernetes, MPI): JAX's auto-detection, ``initialize()``
   without arguments.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping

from dense_jax.core.errors import ConfigError

DEFAULT_PORT_BASE = 65535 - 2**12 + 1  # JAX's SLURM port: base + job id mod 4096


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """Arguments of `jax.distributed.initialize`; ``source == "auto"`` leaves them to JAX."""

    source: str  # "explicit" | "slurm" | "auto"
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None  # None: every device this process sees

    def kwargs(self) -> dict:
        if self.source == "auto":
            return {}
        ids = None if self.local_device_ids is None else list(self.local_device_ids)
        return dict(
            coordinator_address=self.coordinator_address,
            num_processes=self.num_processes,
            process_id=self.process_id,
            local_device_ids=ids,
            cluster_detection_method="deactivate",  # everything is named: no second guess by JAX
        )


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: "gpu[003-005,9],cpu1" -> "gpu003"."""
    match = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?", nodelist.strip())
    prefix, ranges = match.group(1), match.group(2)
    if not prefix and not ranges:
        raise ConfigError(f"cannot read a host from the SLURM node list {nodelist!r}")
    return prefix + (re.split(r"[,-]", ranges)[0] if ranges else "")


def expand_counts(compressed: str) -> list[int]:
    """SLURM's per-node counts, "2(x3),1" -> [2, 2, 2, 1]."""
    counts = []
    for part in compressed.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if match is None:
            raise ConfigError(f"cannot read the SLURM task counts {compressed!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"{name}={env[name]!r} is not an integer") from None


def _count(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    return len([d for d in value.split(",") if d.strip()])


def share_of_devices(local_rank: int, tasks_on_node: int, env: Mapping[str, str]) -> tuple[int, ...] | None:
    """The device ids (among the visible ones) of task `local_rank` of `tasks_on_node`.

    None (every visible device) with one task on the node, or when SLURM bound this task to a
    subset of the node's GPUs (``CUDA_VISIBLE_DEVICES`` lists fewer than ``SLURM_GPUS_ON_NODE``).
    Otherwise an equal, contiguous share of the visible GPUs; their count unknown: device
    `local_rank` (JAX's own choice).
    """
    visible = _count(env.get("CUDA_VISIBLE_DEVICES"))
    on_node = int(env["SLURM_GPUS_ON_NODE"]) if env.get("SLURM_GPUS_ON_NODE", "").isdigit() else None
    if tasks_on_node <= 1 or (visible is not None and on_node is not None and visible < on_node):
        return None
    gpus = visible if visible is not None else on_node
    if gpus is None:
        return (local_rank,)
    if gpus == 1:
        return None
    if gpus % tasks_on_node:
        raise ConfigError(
            f"{tasks_on_node} tasks on this node cannot share {gpus} GPUs equally; "
            "use one task per node or one task per GPU"
        )
    per = gpus // tasks_on_node
    return tuple(range(local_rank * per, (local_rank + 1) * per))


def slurm_spec(env: Mapping[str, str]) -> ProcessSpec | None:
    """The process spec of an ``srun`` task, or None outside one."""
    needed = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")
    if not all(k in env for k in needed) or not ("SLURM_STEP_NUM_TASKS" in env or "SLURM_NTASKS" in env):
        return None
    num = _int(env, "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS")
    port = env.get("JAX_COORDINATOR_PORT") or str(DEFAULT_PORT_BASE + _int(env, "SLURM_JOB_ID") % 2**12)
    tasks_here = 1
    if "SLURM_STEP_TASKS_PER_NODE" in env:
        per_node = expand_counts(env["SLURM_STEP_TASKS_PER_NODE"])
        node = _int(env, "SLURM_NODEID") if "SLURM_NODEID" in env else 0
        tasks_here = per_node[node] if node < len(per_node) else per_node[-1]
    elif "SLURM_NTASKS_PER_NODE" in env:
        tasks_here = _int(env, "SLURM_NTASKS_PER_NODE")
    return ProcessSpec(
        source="slurm",
        coordinator_address=f"{first_host(env['SLURM_STEP_NODELIST'])}:{port}",
        num_processes=num,
        process_id=_int(env, "SLURM_PROCID"),
        local_device_ids=_device_ids(env) or share_of_devices(_int(env, "SLURM_LOCALID"), tasks_here, env),
    )


def _device_ids(env: Mapping[str, str]) -> tuple[int, ...] | None:
    ids = env.get("DENSE_JAX_LOCAL_DEVICE_IDS", "").strip()
    return tuple(int(i) for i in ids.split(",")) if ids else None


def explicit_spec(env: Mapping[str, str]) -> ProcessSpec | None:
    """The spec given by the ``DENSE_JAX_*`` variables, or None when none is set."""
    names = ("DENSE_JAX_COORDINATOR", "DENSE_JAX_NUM_PROCESSES", "DENSE_JAX_PROCESS_ID")
    given = [n for n in names if env.get(n)]
    if not given:
        return None
    if len(given) < len(names):
        missing = ", ".join(n for n in names if n not in given)
        raise ConfigError(f"{', '.join(given)} set but {missing} not: set all three (launch/README.md)")
    return ProcessSpec(
        source="explicit",
        coordinator_address=env["DENSE_JAX_COORDINATOR"],
        num_processes=_int(env, "DENSE_JAX_NUM_PROCESSES"),
        process_id=_int(env, "DENSE_JAX_PROCESS_ID"),
        local_device_ids=_device_ids(env),
    )


def resolve(env: Mapping[str, str] | None = None) -> ProcessSpec:
    """This process's spec from `env` (default ``os.environ``): explicit, SLURM, else JAX's own."""
    env = os.environ if env is None else env
    return explicit_spec(env) or slurm_spec(env) or ProcessSpec(source="auto")


def initialize(env: Mapping[str, str] | None = None) -> ProcessSpec:
    """`jax.distributed.initialize` with the resolved spec (call before any other JAX call)."""
    import jax

    spec = resolve(env)
    try:
        jax.distributed.initialize(**spec.kwargs())
    except ValueError as err:
        if spec.source != "auto":
            raise
        raise ConfigError(
            f"--config.multihost=True, but no cluster was found ({err}): run under srun or on a Cloud "
            "TPU VM, or set DENSE_JAX_COORDINATOR, DENSE_JAX_NUM_PROCESSES and DENSE_JAX_PROCESS_ID "
            "(launch/README.md); one process needs no --config.multihost"
        ) from None
    return spec
