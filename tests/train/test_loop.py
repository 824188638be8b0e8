"""Loop behaviour: CLI errors, init_from weights, and, end to end through the CLI in a
subprocess, the SIGTERM save-and-exit and the stop at a non-finite loss."""

import os
import re
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
from dense_jax.eval import report
from dense_jax.models import registry, weights
from dense_jax.train import loop
from dense_jax.train.checkpoint import Checkpointer
from dense_jax.train.restore import restore_or_init

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cli_unknown_method_is_one_clear_line(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dense_jax.main",
            "--config=configs/dino_coco.py:smoke",
            f"--workdir={tmp_path}",
            "--config.method=byol",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        timeout=300,
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: unknown method 'byol'")


def test_init_from_converted_weights(tmp_path):
    config = get_config("smoke")
    config.mesh.shape = (2, 1)
    mesh, rules = loop.mesh_and_rules(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        trainer = loop.build_trainer(config, methods.get(config.method), mesh, rules)
        overrides = {k: v for k, v in config.model.items() if k != "variant"}
        fresh = jax.device_get(trainer.init().params["backbone"])
        shifted = jax.tree.map(lambda a: a + 1.0, fresh)
        path = str(tmp_path / "backbone.npz")
        weights.save_official(shifted, registry.variant_config(config.model.variant, **overrides), path)

        ckpt = Checkpointer(str(tmp_path / "ckpt"), trainer.config)
        trainer.config.init_from = str(tmp_path / "missing.pth")
        with pytest.raises(FileNotFoundError, match="Download"):
            restore_or_init(ckpt, trainer.config, trainer.init, trainer.shardings, trainer.data_iterator())
        trainer.config.init_from = path
        state, origin = restore_or_init(
            ckpt, trainer.config, trainer.init, trainer.shardings, trainer.data_iterator()
        )
        assert origin == path
        for tree in (state.params["backbone"], state.teacher["backbone"]):
            assert all(jax.tree.leaves(jax.tree.map(np.allclose, jax.device_get(tree), shifted)))

        # Another run's workdir: its latest teacher backbone (here shifted once more).
        teacher = jax.tree.map(lambda a: a + 1.0, state.teacher["backbone"])
        ckpt.save(
            3,
            state.replace(teacher={**state.teacher, "backbone": teacher}),
            trainer.data_iterator(),
            trainer.config,
        )
        ckpt.close()
        trainer.config.init_from = str(tmp_path)
        fresh = Checkpointer(str(tmp_path / "fresh"), trainer.config)
        state, _ = restore_or_init(
            fresh, trainer.config, trainer.init, trainer.shardings, trainer.data_iterator()
        )
        fresh.close()
    assert all(
        jax.tree.leaves(
            jax.tree.map(np.array_equal, jax.device_get(state.params["backbone"]), jax.device_get(teacher))
        )
    )
    assert (
        state.params["backbone"]["block_0"]["attn"]["qkv"]["kernel"].sharding
        == trainer.shardings.params["backbone"]["block_0"]["attn"]["qkv"]["kernel"]
    )


def _train_cli(workdir, *overrides) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dense_jax.main",
        "--config=configs/dino_coco.py:smoke",
        f"--workdir={workdir}",
        *overrides,
    ]


def _steps_logged(workdir) -> list[int]:
    return [r["step"] for r in report.read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]


def _checkpoint_steps(workdir) -> list[int]:
    return sorted(int(name) for name in os.listdir(os.path.join(workdir, "ckpt")) if name.isdigit())


def test_sigterm_saves_at_the_next_step_and_exits_cleanly(tmp_path):
    """End to end: the CLI gets SIGTERM mid-run (no periodic checkpoint is due), saves the
    step it reached and exits with status 0; that checkpoint is the only one."""
    workdir = tmp_path / "run"
    overrides = ("--config.train.epochs=20", "--config.ckpt.every_steps=100000")  # 160 steps
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.Popen(
            _train_cli(workdir, *overrides), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        while proc.poll() is None and len(_steps_logged(workdir)) < 3:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = (tmp_path / "log").read_text()
    assert proc.returncode == 0, output[-3000:]
    last = _steps_logged(workdir)[-1]
    assert 3 <= last < 160
    assert f"preempted: checkpoint saved at step {last} in {workdir / 'ckpt'}" in output
    assert _checkpoint_steps(workdir) == [last]


def test_nan_stops_without_a_checkpoint_after_it(tmp_path):
    """End to end: a divergent lr makes the loss NaN at some step k; the CLI exits with one
    error line naming k and the last good checkpoint, which is k − 1 (saved every step), and
    nothing is saved from step k on."""
    overrides = ("--config.optim.lr=1e30", "--config.ckpt.every_steps=1")
    out = subprocess.run(
        _train_cli(tmp_path, *overrides), cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 1, out.stderr[-3000:]
    last_line = out.stderr.strip().splitlines()[-1]
    match = re.fullmatch(
        r"error: non-finite loss(, grad_norm)? at step (\d+) \(.*\); stopping\. The last good checkpoint "
        r"is step (\d+) in (.*)\.",
        last_line,
    )
    assert match, last_line
    nan_step, good = int(match[2]), int(match[3])
    assert match[4] == str(tmp_path / "ckpt")
    assert 1 < nan_step < 16 and good == nan_step - 1
    assert max(_checkpoint_steps(tmp_path)) == good


def test_first_step_is_compiled_ahead_reported_and_profiled(tmp_path, capfd):
    """The step is compiled before step 1 and reported (seconds, parameters per part, XLA's
    per-device memory) in ``metrics.jsonl`` and, for `loop.train`'s runs, in one printed line;
    the jitted step then runs that executable (one compilation in all); ``profile_steps``
    writes a jax.profiler trace of those steps."""
    config = get_config("smoke")
    config.train.profile_steps = (1, 3)
    config.train.epochs = 1
    mesh, rules = loop.mesh_and_rules(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        trainer = loop.build_trainer(config, methods.get(config.method), mesh, rules)
        state = loop.run(trainer, str(tmp_path), announce=True)
    (record,) = [r for r in report.read_jsonl(os.path.join(tmp_path, "metrics.jsonl")) if "compiled" in r]
    compiled = record["compiled"]
    assert record["step"] == 0 and compiled["compile_s"] > 0
    sizes = {part: sum(x.size for x in jax.tree.leaves(tree)) for part, tree in state.params.items()}
    assert compiled["params"] == sizes and sizes["backbone"] > 0 and sizes["head"] > 0
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))  # replicated: all on each device
    assert state_bytes <= compiled["step_memory_bytes"] < 50 * state_bytes
    assert trainer.step._cache_size() == 1
    assert f"step compiled in {compiled['compile_s']:.1f} s; params backbone" in capfd.readouterr().out
    traces = [f for _, _, files in os.walk(tmp_path / "profile") for f in files if f.endswith(".xplane.pb")]
    assert len(traces) == 1
