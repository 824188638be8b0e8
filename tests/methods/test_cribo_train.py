"""CrIBo in the generic trainer (methods/cribo.py, configs/cribo_coco.py:smoke; cribo.md §5).

`:smoke` with SGD at a large constant lr (`parity.sgd_without_warmup`), epochs of 2 steps so
that the cross-image loss is on from step 3, four steps from the same initial state on 1 and on
8 devices:
- the step compiles once, the losses are finite, the cross-image loss is 0 in epoch 0 and
  positive later, and the bank is split over the 8 devices (each holds 1 of the 8 image columns);
- the whole state (params, teacher, optimizer, centres and the bank: objects, masks, image ids,
  pointer) is equal on 1 and 8 devices after steps that move the parameters far beyond the
  tolerance (the groups of 4 images straddle the devices);
- (slow) a run resumed from a checkpoint with a non-empty bank ends bitwise equal to a
  straight one.
"""

import functools
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.cribo_coco import get_config
from dense_jax import methods
from dense_jax.train import loop
from tests.train import parity
from tests.train.test_trainer import Trainers, first_batches, run_steps

N_STEPS = 4


sgd_smoke = functools.partial(parity.sgd_smoke, get_config, steps_per_epoch=2)


@pytest.fixture(scope="module")
def trainers():
    return Trainers(sgd_smoke)


@pytest.fixture(scope="module")
def one_and_eight(trainers):
    batches = first_batches(trainers, N_STEPS)
    one = run_steps(trainers, (1, 1), False, batches)
    eight = run_steps(trainers, (8, 1), False, batches, init_state=one["init"])
    return one, eight


def test_compiles_once_and_turns_the_cross_image_loss_on(one_and_eight, trainers):
    one, eight = one_and_eight
    assert one["cache_size"] == 1 and eight["cache_size"] == 1
    assert np.all(np.isfinite(one["losses"]))
    cross_image = [m["loss_cross_image"] for m in one["metrics"]]
    assert cross_image[0] == cross_image[1] == 0.0 and max(cross_image[2:]) > 0
    assert all(m["objects_per_image"] > 0 for m in one["metrics"])
    trainer, _ = trainers.get((8, 1))
    with trainers.context((8, 1)):
        objects = trainer.init().aux["bank"]["objects"]
        assert tuple(objects.sharding.spec) == (None, None, "data", None, None)
        assert {s.data.shape[2] for s in objects.addressable_shards} == {1}


def test_whole_state_equal_on_1_and_8_devices(one_and_eight):
    one, eight = one_and_eight
    moved = parity.moved(one["params"], one["init"].params)
    diff = max(parity.relative_diff(one[k], eight[k]) for k in ("params", "teacher", "opt", "aux"))
    loss_diff = float(np.max(np.abs(np.subtract(one["losses"], eight["losses"]))))
    print(f"params moved {moved:.2e}; 1 vs 8 devices: max |loss diff| {loss_diff:.1e}, state diff {diff:.1e}")
    assert moved > 1e-2
    assert loss_diff < 1e-5 and diff < 1e-5
    for key in ("valid", "image", "ptr"):
        np.testing.assert_array_equal(one["aux"]["bank"][key], eight["aux"]["bank"][key])
    assert int(one["aux"]["bank"]["ptr"]) == N_STEPS % one["aux"]["bank"]["image"].shape[0]


@pytest.mark.slow
def test_resume_with_a_nonempty_bank_is_bitwise(tmp_path):
    config = sgd_smoke((8, 1))
    config.train.update(dict(epochs=3, steps_per_epoch=2))
    config.ckpt.update(dict(every_steps=2, keep=5, async_save=False))
    mesh, rules = loop.mesh_and_rules(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        trainer = loop.build_trainer(config, methods.get("cribo"), mesh, rules)
        straight = jax.device_get(loop.run(trainer, str(tmp_path / "straight")))
        shutil.copytree(tmp_path / "straight" / "ckpt", tmp_path / "resumed" / "ckpt")
        shutil.rmtree(tmp_path / "resumed" / "ckpt" / "6")  # resume from step 4: bank holds steps 0-3
        resumed = jax.device_get(loop.run(trainer, str(tmp_path / "resumed")))
    assert int(resumed.step) == 6 and np.asarray(resumed.aux["bank"]["image"]).max() == 6 * 8 - 1
    same = jax.tree.map(np.array_equal, straight, resumed)
    assert all(jax.tree.leaves(same))
