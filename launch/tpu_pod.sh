#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: the same command on every worker; jax.distributed
# finds the other hosts through the TPU metadata (--config.multihost=True).
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [extra --config.* flags]
#   launch/tpu_pod.sh my-v4-32 us-central2-b configs/neco_dinov2.py gs://bucket/neco_s14r
#
# Data and weights must be readable from every worker at the paths the config names
# (e.g. a persistent disk mounted read-only at the same path, or a GCS fuse mount).
set -euo pipefail
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
repo=${DENSE_JAX_REPO:-~/dense_jax}
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  set -e; cd $repo
  python3 -m venv .venv 2>/dev/null || true; . .venv/bin/activate
  pip install -q -e . 'jax[tpu]'
  python -m dense_jax.main --config=$config --workdir=$workdir --config.multihost=True $*"
