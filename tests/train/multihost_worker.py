"""One process of the multi-host tests:
`python multihost_worker.py PID N_PROCS PORT WORKDIR DEVICES [EPOCHS]`.

Runs the DINO smoke config for EPOCHS (default 1) epochs with `jax.distributed` over localhost
CPU devices, set up by `dense_jax.core.distributed.initialize` from the environment: the
``DENSE_JAX_*`` variables made from the arguments, unless the caller set ``SLURM_*`` variables
(then those are parsed, as under ``srun``).
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
epochs = int(sys.argv[6]) if len(sys.argv) > 6 else 1
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
os.environ["JAX_PLATFORMS"] = "cpu"

from dense_jax.core import distributed  # noqa: E402

if n_procs > 1:
    if "SLURM_PROCID" not in os.environ:
        os.environ.update(
            DENSE_JAX_COORDINATOR=f"localhost:{port}",
            DENSE_JAX_NUM_PROCESSES=str(n_procs),
            DENSE_JAX_PROCESS_ID=str(pid),
        )
    spec = distributed.initialize()
    print(f"distributed: {spec}", flush=True)

from configs.dino_coco import get_config  # noqa: E402
from dense_jax import methods  # noqa: E402
from dense_jax.train import loop  # noqa: E402

config = get_config("smoke")
config.mesh.shape = (8, 1)
config.train.epochs = epochs
config.train.record_batch_ids = True
loop.train(config, methods.get(config.method), workdir)
