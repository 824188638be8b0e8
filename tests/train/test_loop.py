"""Loop behaviour that needs no compiled step: NaN stop, CLI errors, init_from weights."""

import os
import signal
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.dino_coco import get_config
from dense_jax import methods
from dense_jax.models import registry, weights
from dense_jax.train import loop
from dense_jax.train.checkpoint import Checkpointer, restore_or_init

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Ckpt:
    directory = "/runs/x/ckpt"

    def latest_step(self):
        return 40


class _Bar:
    def set_postfix(self, **_):
        pass


def test_non_finite_loss_stops_naming_the_last_good_checkpoint(tmp_path):
    log = loop._Logger(str(tmp_path), images_per_step=8, bar=_Bar())
    log.pending = [(41, {"loss": np.float32(1.0), "grad_norm": np.float32(2.0)})]
    assert log.flush(41, _Ckpt())["loss"] == 1.0
    log.pending = [(42, {"loss": np.float32(np.nan), "grad_norm": np.float32(2.0)})]
    with pytest.raises(loop.NonFiniteLossError, match="step 42.*last good checkpoint is step 40"):
        log.flush(42, _Ckpt())


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


def test_sigterm_requests_a_checkpoint_and_a_clean_stop():
    preemption = loop._Preemption()
    try:
        assert not preemption.reached(None, 1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.reached(None, 2)
    finally:
        preemption.restore()
    assert signal.getsignal(signal.SIGTERM) is preemption.previous
