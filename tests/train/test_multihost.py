"""2 processes × 4 CPU devices (jax.distributed on localhost) vs 1 process × 8 devices:
disjoint host batches that rebuild the global batch, and the same losses (jax-practices §9-10)."""

import json
import os
import socket
import subprocess
import sys

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
