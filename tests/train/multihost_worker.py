"""One process of the multi-host test: `python multihost_worker.py PID N_PROCS PORT WORKDIR DEVICES`.

Runs the DINO smoke config for one epoch with `jax.distributed` over localhost CPU devices.
"""

import os
import sys

pid, n_procs, port, workdir, devices = (
    int(sys.argv[1]),
    int(sys.argv[2]),
    sys.argv[3],
    sys.argv[4],
    sys.argv[5],
)
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

if n_procs > 1:
    jax.distributed.initialize(f"localhost:{port}", n_procs, pid)

from configs.dino_coco import get_config  # noqa: E402
from dense_jax import methods  # noqa: E402
from dense_jax.train import loop  # noqa: E402

config = get_config("smoke")
config.mesh.shape = (8, 1)
config.train.epochs = 1
config.train.record_batch_ids = True
loop.train(config, methods.get(config.method), workdir)
