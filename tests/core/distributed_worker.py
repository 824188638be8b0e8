"""One process of the SLURM multi-process check: sets up `jax.distributed` from the ``SLURM_*``
variables its parent set (`dense_jax.core.distributed.initialize`), on 4 CPU devices, and prints
one JSON line: the resolved spec, the process and device counts and a cross-process sum."""

import json
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

from dense_jax.core import distributed  # noqa: E402

spec = distributed.initialize()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

gathered = multihost_utils.process_allgather(np.asarray([jax.process_index() + 1]))
print(
    json.dumps(
        {
            "source": spec.source,
            "coordinator": spec.coordinator_address,
            "process_index": jax.process_index(),
            "process_count": jax.process_count(),
            "local_devices": jax.local_device_count(),
            "devices": jax.device_count(),
            "sum": int(np.sum(gathered)),
        }
    ),
    flush=True,
)
