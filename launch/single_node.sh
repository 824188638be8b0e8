#!/usr/bin/env bash
# One machine, all its GPUs, one process: the trainer shards the batch over every visible
# device (mesh data axis -1), so nothing distributed is needed.
#
#   launch/single_node.sh CONFIG WORKDIR [--config.FIELD=VALUE ...]
#   CUDA_VISIBLE_DEVICES=0,1,2,3 launch/single_node.sh configs/croc_coco.py workdirs/croc_coco
#
# SIGTERM (kill, a scheduler's preemption, docker stop) saves at the next step and exits 0;
# running the same command again resumes. Ctrl-C does not save: use `kill -TERM <pid>`.
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 CONFIG WORKDIR [--config.FIELD=VALUE ...]" >&2; exit 2; }
config=$1 workdir=$2
shift 2
cd "$(dirname "$0")/.."
if [[ -z ${VIRTUAL_ENV:-} && -f .venv/bin/activate ]]; then
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
# Let XLA take most of the GPU memory up front, as JAX does by default; lower it to share.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec python -m dense_jax.main --config="$config" --workdir="$workdir" "$@"
