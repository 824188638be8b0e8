"""2 processes × 4 CPU devices (jax.distributed on localhost) vs 1 process × 8 devices:
disjoint host batches that rebuild the global batch, and the same losses (jax-practices §9-10);
a SIGTERM to both processes saves one checkpoint and the same command resumes to the same losses."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost_worker.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return str(s.getsockname()[1])


def _jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_two_hosts_match_one_host(tmp_path):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=REPO)
    runs = {"multi": [(pid, 2, "4") for pid in range(2)], "single": [(0, 1, "8")]}
    procs = []
    try:
        for name, workers in runs.items():
            for pid, n, devices in workers:
                log = tmp_path / f"{name}{pid}.log"
                with open(log, "w") as out:
                    procs.append(
                        (
                            subprocess.Popen(
                                [
                                    sys.executable,
                                    WORKER,
                                    str(pid),
                                    str(n),
                                    port,
                                    str(tmp_path / name),
                                    devices,
                                ],
                                cwd=REPO,
                                env=env,
                                stdout=out,
                                stderr=subprocess.STDOUT,
                            ),
                            log,
                        )
                    )
        for proc, log in procs:
            proc.wait(timeout=900)
            assert proc.returncode == 0, log.read_text()[-3000:]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    single = _jsonl(tmp_path / "single" / "metrics.jsonl")
    multi = _jsonl(tmp_path / "multi" / "metrics.jsonl")
    assert [r["step"] for r in multi] == [r["step"] for r in single]
    np.testing.assert_allclose([r["loss"] for r in multi], [r["loss"] for r in single], rtol=1e-5, atol=1e-5)
    assert not os.path.exists(tmp_path / "multi" / "metrics.1.jsonl")

    whole = {r["step"]: r["ids"] for r in _jsonl(tmp_path / "single" / "batch_ids.0.jsonl")}
    hosts = [
        {r["step"]: r["ids"] for r in _jsonl(tmp_path / "multi" / f"batch_ids.{p}.jsonl")} for p in range(2)
    ]
    for step, ids in whole.items():
        assert not set(hosts[0][step]) & set(hosts[1][step])
        assert hosts[0][step] + hosts[1][step] == ids


def _launch(workdir, n_procs, devices, port, epochs, tmp_path, tag):
    env = dict(os.environ, PYTHONPATH=REPO)
    procs = []
    for pid in range(n_procs):
        log = tmp_path / f"{tag}{pid}.log"
        with open(log, "w") as out:
            command = [
                sys.executable,
                WORKER,
                str(pid),
                str(n_procs),
                port,
                str(workdir),
                devices,
                str(epochs),
            ]
            procs.append(
                (subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT), log)
            )
    return procs


def _finish(procs, timeout=900):
    try:
        for proc, log in procs:
            proc.wait(timeout=timeout)
            assert proc.returncode == 0, log.read_text()[-3000:]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _losses(path):
    """step -> loss of the last record of each step (a resumed run logs the steps after its restart)."""
    return {r["step"]: r["loss"] for r in _jsonl(path) if "loss" in r}


@pytest.mark.slow
def test_sigterm_saves_and_the_same_command_resumes(tmp_path):
    epochs = 2  # 16 steps of the smoke config
    single = tmp_path / "single"
    _finish(_launch(single, 1, "8", _free_port(), epochs, tmp_path, "single"))

    multi, port = tmp_path / "multi", _free_port()
    procs = _launch(multi, 2, "4", port, epochs, tmp_path, "first")
    metrics = multi / "metrics.jsonl"
    deadline = time.time() + 600
    while not (metrics.exists() and len(_losses(metrics)) >= 3):
        assert time.time() < deadline and all(p.poll() is None for p, _ in procs), "no steps before SIGTERM"
        time.sleep(0.5)
    for proc, _ in procs:
        proc.send_signal(signal.SIGTERM)
    _finish(procs, timeout=300)  # both exit 0 after saving
    saved = sorted(int(d) for d in os.listdir(multi / "ckpt") if d.isdigit())
    assert saved and 3 <= saved[-1] < 16, saved
    assert all("preempted: checkpoint saved" in log.read_text() for _, log in procs[:1])

    _finish(_launch(multi, 2, "4", _free_port(), epochs, tmp_path, "again"))  # the same command
    restarts = [r for r in _jsonl(metrics) if "restart" in r]
    assert [r["step"] for r in restarts] == [saved[-1]]
    want, got = _losses(single / "metrics.jsonl"), _losses(metrics)
    assert sorted(got) == sorted(want) == list(range(1, 17))
    np.testing.assert_allclose(
        [got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-5, atol=1e-5
    )
