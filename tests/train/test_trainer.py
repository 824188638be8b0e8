"""Generic trainer on the DINO smoke config with SGD at a constant lr (`parity`: the steps
move the parameters far beyond the parity tolerance; jax-practices §4, §7, §9).

- mesh parity: the same steps on meshes (1,1), (8,1), (4,2) and (2,4) with FSDP give the
  same losses and the same whole state (student, optimizer state, teacher, aux) to 1e-5;
- the step compiles once; the last layer and its optimizer state stay frozen in epoch 0;
- a run killed with SIGKILL (at a seeded step) and restarted resumes at its latest
  checkpoint and ends bitwise equal to an uninterrupted one, with the same batch ids at
  every step.
Trainers (and their compiled steps) are shared between tests to keep compile time down.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.dino_coco import get_config
from dense_jax import methods
from dense_jax.train import loop
from tests.train import parity

N_STEPS = 3
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def smoke_config(shape=(8, 1), fsdp=False):
    config = get_config("smoke")
    config.mesh.shape = shape
    config.mesh.fsdp = fsdp
    config.train.record_batch_ids = True
    return config


def sgd_smoke_config(shape=(8, 1), fsdp=False):
    return parity.sgd_without_warmup(smoke_config(shape, fsdp))


class Trainers:
    """Builds each (mesh, fsdp) trainer of ``make_config(shape, fsdp)`` once; `context`
    enters its mesh and rules. Shared with the other methods' trainer tests."""

    def __init__(self, make_config):
        self.make_config = make_config
        self.built = {}

    def get(self, shape, fsdp=False):
        if (shape, fsdp) not in self.built:
            config = self.make_config(shape, fsdp)
            mesh, rules = loop.mesh_and_rules(config)
            with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
                self.built[shape, fsdp] = (
                    loop.build_trainer(config, methods.get(config.method), mesh, rules),
                    rules,
                )
        return self.built[shape, fsdp]

    def context(self, shape, fsdp=False):
        trainer, rules = self.get(shape, fsdp)
        stack = __import__("contextlib").ExitStack()
        stack.enter_context(jax.set_mesh(trainer.mesh))
        stack.enter_context(nn.logical_axis_rules(rules))
        return stack


@pytest.fixture(scope="module")
def trainers():
    return Trainers(sgd_smoke_config)


def first_batches(trainers, n):
    """The first `n` host batches of the (1, 1) trainer's data iterator."""
    trainer, _ = trainers.get((1, 1))
    it = trainer.data_iterator()
    return [next(it) for _ in range(n)]


@pytest.fixture(scope="module")
def host_batches(trainers):
    return first_batches(trainers, N_STEPS)


def run_steps(trainers, shape, fsdp, host_batches, init_state=None):
    """One step per host batch from `init_state` (host arrays; default: the trainer's own
    init); host copies of the losses, metrics and final state, plus the initial state."""
    trainer, _ = trainers.get(shape, fsdp)
    with trainers.context(shape, fsdp):
        state = trainer.init() if init_state is None else jax.device_put(init_state, trainer.shardings)
        init = jax.device_get(state)
        metrics = []
        for host_batch in host_batches:
            state, step_metrics = trainer.step(state, trainer.device_batch(host_batch), trainer.rng)
            metrics.append(step_metrics)
        out = jax.device_get(
            {
                "metrics": metrics,
                "teacher": state.teacher,
                "params": state.params,
                "opt": state.opt_state,
                "aux": state.aux,
            }
        )
        out["losses"] = [m["loss"] for m in out["metrics"]]
        out.update(
            init=init,
            cache_size=trainer.step._cache_size(),
            spec=tuple(state.params["backbone"]["block_0"]["mlp"]["fc1"]["kernel"].sharding.spec),
        )
    return out


def max_abs_diff(a, b) -> float:
    """Largest elementwise |a − b| over two trees of the same structure."""
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y), initial=0.0)), a, b)))


@pytest.fixture(scope="module")
def reference(trainers, host_batches):
    return run_steps(trainers, (1, 1), False, host_batches)


def test_compiles_once_and_freezes_last_layer(reference):
    assert reference["cache_size"] == 1
    assert np.all(np.isfinite(reference["losses"]))
    # Epoch 0 < freeze_last_layer: the last layer and its optimizer state never move.
    init = reference["init"]
    np.testing.assert_array_equal(
        reference["params"]["head"]["last_layer"]["kernel"], init.params["head"]["last_layer"]["kernel"]
    )
    frozen = [s[-1].inner_states["last_layer"] for s in (reference["opt"], init.opt_state)]
    assert all(np.array_equal(a, b) for a, b in zip(*map(jax.tree.leaves, frozen)))
    assert not np.array_equal(
        reference["params"]["head"]["mlp"]["fc1"]["kernel"], init.params["head"]["mlp"]["fc1"]["kernel"]
    )


@pytest.mark.parametrize(
    "shape,fsdp,spec",
    [
        ((8, 1), False, (None, "model")),
        ((4, 2), False, (None, "model")),
        ((2, 4), True, ("data", "model")),
    ],
)
def test_mesh_parity(shape, fsdp, spec, trainers, host_batches, reference):
    out = run_steps(trainers, shape, fsdp, host_batches, init_state=reference["init"])  # no init compile
    assert out["spec"] == spec and out["cache_size"] == 1
    loss_diff = np.max(np.abs(np.subtract(out["losses"], reference["losses"])))
    whole = ("params", "opt", "teacher", "aux")
    diffs = {k: parity.relative_diff(out[k], reference[k]) for k in whole}
    moved = parity.moved(reference["params"], reference["init"].params)
    print(
        f"mesh {shape} fsdp={fsdp}: params moved {moved:.1e}; max |loss diff| {loss_diff:.1e}; max diff",
        diffs,
    )
    assert moved > 1e-2  # 1000× the tolerance
    assert loss_diff < 1e-5 and max(diffs.values()) < 1e-5


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_sigkill_resume_is_bitwise(trainers, tmp_path):
    trainer, _ = trainers.get((8, 1))
    total = trainer.config.train.epochs * trainer.config.train.steps_per_epoch
    killed = tmp_path / "killed"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dense_jax.main",
                "--config=configs/dino_coco.py:smoke",
                f"--workdir={killed}",
                "--config.mesh.shape=(8,1)",
                "--config.train.record_batch_ids=True",
                *parity.sgd_without_warmup_flags(),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    kill_after = random.Random(18).randint(5, total - 5)
    metrics = killed / "metrics.jsonl"
    try:
        while proc.poll() is None:
            if metrics.exists() and any(r["step"] >= kill_after for r in _read_jsonl(metrics)):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    steps_before = max(r["step"] for r in _read_jsonl(metrics))
    assert steps_before < total, "the run ended before it could be killed"

    latest = max(int(name) for name in os.listdir(killed / "ckpt") if name.isdigit())
    with trainers.context((8, 1)):
        resumed = loop.run(trainer, str(killed))
        uninterrupted = loop.run(trainer, str(tmp_path / "straight"))
        resumed, uninterrupted = jax.device_get((resumed, uninterrupted))
    same = jax.tree.map(np.array_equal, resumed, uninterrupted)
    assert all(jax.tree.leaves(same)), "resumed state differs from the uninterrupted run"
    # It resumed at the latest checkpoint (a silent fresh start would also end bitwise equal).
    restart = [r for r in _read_jsonl(metrics) if "restart" in r]
    assert restart == [{"step": latest, "restart": f"{killed / 'ckpt'} step {latest}"}], restart

    straight_ids = {r["step"]: r["ids"] for r in _read_jsonl(tmp_path / "straight" / "batch_ids.0.jsonl")}
    killed_ids = _read_jsonl(killed / "batch_ids.0.jsonl")
    assert sorted(straight_ids) == list(range(total))
    assert {r["step"] for r in killed_ids} == set(range(total))
    assert len(killed_ids) > total or steps_before % trainer.config.ckpt.every_steps == 0  # replayed steps
    for r in killed_ids:
        assert r["ids"] == straight_ids[r["step"]], f"batch ids differ at step {r['step']}"
