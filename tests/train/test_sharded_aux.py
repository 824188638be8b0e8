"""A method's aux leaf sharded over 'data' (the method interface's mesh in `StepContext`):
each device holds and writes its own slice, the whole state is equal on 1 and 8 devices after
steps that move it far beyond the tolerance, and resume from a checkpoint is bitwise."""

import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.dino_coco import get_config
from dense_jax.train import loop
from tests.train import parity
from tests.train import sharded_bank_method as method

N_STEPS = 6


def bank_config(shape):
    c = get_config("smoke")
    c.mesh.shape = shape
    c.bank = dict(slots=3, weight=0.5)
    parity.sgd_without_warmup(c)
    c.optim.freeze_last_layer = 0
    c.train.update(dict(epochs=1, steps_per_epoch=N_STEPS))
    c.ckpt.update(dict(every_steps=2, keep=5, async_save=False))
    return c


def steps(shape, host_batches=None):
    config = bank_config(shape)
    mesh, rules = loop.mesh_and_rules(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        trainer = loop.build_trainer(config, method, mesh, rules)
        if host_batches is None:
            it = trainer.data_iterator()
            host_batches = [next(it) for _ in range(N_STEPS)]
        state = trainer.init()
        init = jax.device_get(state)
        for batch in host_batches:
            state, _ = trainer.step(state, trainer.device_batch(batch), trainer.rng)
        bank = state.aux["bank"]
        shard_rows = {s.data.shape[1] for s in bank.addressable_shards}
        return (
            jax.device_get(state),
            init,
            host_batches,
            bank.sharding.spec,
            shard_rows,
            trainer.step._cache_size(),
        )


@pytest.fixture(scope="module")
def one_and_eight():
    one, init, batches, _, _, _ = steps((1, 1))
    eight, init8, _, spec, shard_rows, cache = steps((8, 1), batches)
    return one, init, eight, init8, spec, shard_rows, cache


def test_bank_is_split_over_devices_and_the_step_compiles_once(one_and_eight):
    one, _, eight, _, spec, shard_rows, cache = one_and_eight
    batch = bank_config((8, 1)).data.batch_size
    assert tuple(spec) == (None, "data", None) and shard_rows == {batch // 8}
    assert cache == 1
    assert int(one.aux["bank_fill"]) == 3 and np.abs(one.aux["bank"]).min(axis=-1).max() > 0


def test_whole_state_equal_on_1_and_8_devices(one_and_eight):
    one, init, eight, init8, *_ = one_and_eight
    for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(init8)):
        np.testing.assert_array_equal(a, b)
    moved = parity.moved(one.params, init.params)
    diff = parity.relative_diff(one, eight)
    print(f"params moved {moved:.2e}; max |1 vs 8 devices| / (1 + |value|) over the whole state {diff:.2e}")
    assert moved > 1e-2
    assert diff < 1e-5


def test_resume_with_the_sharded_bank_is_bitwise(tmp_path):
    config = bank_config((8, 1))
    mesh, rules = loop.mesh_and_rules(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        trainer = loop.build_trainer(config, method, mesh, rules)
        straight = jax.device_get(loop.run(trainer, str(tmp_path / "straight")))
        shutil.copytree(tmp_path / "straight" / "ckpt", tmp_path / "resumed" / "ckpt")
        shutil.rmtree(tmp_path / "resumed" / "ckpt" / str(N_STEPS))  # resume from step 4
        resumed = jax.device_get(loop.run(trainer, str(tmp_path / "resumed")))
    assert int(resumed.step) == N_STEPS and int(resumed.aux["bank_fill"]) == 3
    same = jax.tree.map(np.array_equal, straight, resumed)
    assert all(jax.tree.leaves(same))
