#!/usr/bin/env bash
# Train on a Cloud TPU VM (a single host or a pod slice): the same command on every worker;
# jax.distributed finds the other hosts from the TPU metadata (--config.multihost=True).
#
#   launch/tpu_vm.sh create  TPU ZONE [ACCELERATOR [VERSION]]   # default v4-32, tpu-ubuntu2204-base
#   launch/tpu_vm.sh install TPU ZONE                           # copy this checkout, venv, pip install
#   launch/tpu_vm.sh run     TPU ZONE CONFIG WORKDIR [--config.FIELD=VALUE ...]
#   launch/tpu_vm.sh delete  TPU ZONE
#
#   launch/tpu_vm.sh run my-v4-32 us-central2-b configs/neco_dinov2.py gs://my-bucket/neco_s14r \
#       --config.data.root=/mnt/disks/data/coco --config.init_from=/mnt/disks/data/weights/dinov2_vits14_reg4_pretrain.pth
#
# WORKDIR may be a bucket path gs://BUCKET/PATH: every worker mounts the bucket with gcsfuse
# at $DENSE_JAX_GCS_MOUNT/BUCKET (default /mnt/gcs) and the trainer writes there, so a
# preempted or deleted VM loses nothing. Preemption or maintenance sends SIGTERM: the trainer
# saves at the next step on every host and exits 0; run the same command again (on a new VM:
# create, install, run) and it resumes from the bucket. Data and weights must be readable at
# the same path on every worker (a read-only persistent disk, or a bucket mounted the same way).
set -euo pipefail

usage() { sed -n '2,18p' "$0" >&2; exit 2; }
[[ $# -ge 3 ]] || usage
action=$1 tpu=$2 zone=$3
shift 3
repo_dir=${DENSE_JAX_REMOTE_DIR:-dense_jax}     # relative to the remote home directory
mount_root=${DENSE_JAX_GCS_MOUNT:-/mnt/gcs}

on_all() { gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$1"; }

case $action in
  create)
    accelerator=${1:-v4-32} version=${2:-tpu-ubuntu2204-base}
    read -r -a more <<< "${DENSE_JAX_TPU_FLAGS:-}"   # e.g. DENSE_JAX_TPU_FLAGS=--spot
    gcloud compute tpus tpu-vm create "$tpu" --zone "$zone" --accelerator-type "$accelerator" \
      --version "$version" ${more[@]+"${more[@]}"}
    ;;
  install)
    here=$(cd "$(dirname "$0")/.." && pwd)
    tar -C "$here" --exclude=.venv --exclude=.git --exclude=workdirs --exclude=./data -czf /tmp/dense_jax_src.tgz .
    gcloud compute tpus tpu-vm scp /tmp/dense_jax_src.tgz "$tpu":dense_jax_src.tgz --zone "$zone" --worker=all
    on_all "set -e; mkdir -p $repo_dir && tar -xzf dense_jax_src.tgz -C $repo_dir && cd $repo_dir
      python3 -m venv .venv && . .venv/bin/activate && pip install -q -U pip
      pip install -q -e . 'jax[tpu]'
      command -v gcsfuse >/dev/null || echo 'note: gcsfuse missing; a gs:// workdir needs it (apt-get install gcsfuse)'"
    ;;
  run)
    [[ $# -ge 2 ]] || usage
    config=$1 workdir=$2
    shift 2
    mount=""
    if [[ $workdir == gs://* ]]; then
      path=${workdir#gs://} bucket=${workdir#gs://}
      bucket=${bucket%%/*}
      mount="sudo mkdir -p $mount_root/$bucket && sudo chown \$USER $mount_root/$bucket
        mountpoint -q $mount_root/$bucket || gcsfuse --implicit-dirs $bucket $mount_root/$bucket"
      workdir=$mount_root/$path
    fi
    args=$(printf ' %q' "--config=$config" "--workdir=$workdir" --config.multihost=True "$@")
    on_all "set -e; ${mount:-true}
      cd $repo_dir && . .venv/bin/activate
      exec python -m dense_jax.main$args"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$tpu" --zone "$zone" --quiet
    ;;
  *) usage ;;
esac
