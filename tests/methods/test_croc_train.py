"""CrOC in the generic trainer (methods/croc.py, configs/croc_coco.py:smoke; croc.md §2, §5, §7).

`:smoke` with SGD at a large constant lr (`parity.sgd_without_warmup`: Adam's steps on rounding
noise would differ between meshes), three steps from the same initial state on 1 and on 8
devices:
- the batches carry ``global_pos`` (B, 2, N, 2) float32, the patch centres of the recorded crop
  boxes and flips (croc.md §2, the §9.1 formula of `transforms.patch_centers`);
- the step compiles once, the losses are finite, both last layers (and their optimizer state)
  stay frozen in epoch 0 while the shared MLP moves;
- the whole state (params, teacher, optimizer, both centres) is equal on 1 and 8 devices after
  steps that move the parameters far beyond the tolerance (the normalisation groups of 4
  images straddle the 8 devices).
"""

import functools

import jax
import numpy as np
import pytest

from configs.croc_coco import get_config
from dense_jax.data.transforms import patch_centers
from tests.train import parity
from tests.train.test_trainer import Trainers, first_batches, run_steps

N_STEPS = 3


sgd_smoke = functools.partial(parity.sgd_smoke, get_config)


@pytest.fixture(scope="module")
def trainers():
    return Trainers(sgd_smoke)


@pytest.fixture(scope="module")
def host_batches(trainers):
    return first_batches(trainers, N_STEPS)


@pytest.fixture(scope="module")
def one_and_eight(trainers, host_batches):
    one = run_steps(trainers, (1, 1), False, host_batches)
    eight = run_steps(trainers, (8, 1), False, host_batches, init_state=one["init"])
    return one, eight


def test_batches_carry_patch_positions(host_batches):
    config = sgd_smoke()
    grid = config.crops.global_size // config.crops.patch_size
    for batch in host_batches:
        pos = batch["global_pos"]
        assert pos.shape == (config.data.batch_size, 2, grid * grid, 2) and pos.dtype == np.float32
        np.testing.assert_allclose(pos, patch_centers(batch["global_box"], batch["global_flip"], grid))
        # positions are in original-image pixels (48² scenes), inside each crop box
        box = batch["global_box"][:, :, None]
        assert np.all((pos >= box[..., :2] - 0.5) & (pos <= box[..., 2:] - 0.5))


def test_compiles_once_and_freezes_both_last_layers(one_and_eight):
    one, eight = one_and_eight
    assert one["cache_size"] == 1 and eight["cache_size"] == 1
    assert np.all(np.isfinite(one["losses"]))
    assert all(m["clusters_per_image"] > 0 for m in one["metrics"])
    init, head = one["init"], one["params"]["head"]
    for layer in ("last_layer", "last_layer_c"):
        for name, value in head[layer].items():
            np.testing.assert_array_equal(value, init.params["head"][layer][name])
    frozen = [s[-1].inner_states["last_layer"] for s in (one["opt"], init.opt_state)]
    assert all(np.array_equal(a, b) for a, b in zip(*map(jax.tree.leaves, frozen)))
    assert not np.array_equal(head["mlp"]["fc1"]["kernel"], init.params["head"]["mlp"]["fc1"]["kernel"])


def test_whole_state_equal_on_1_and_8_devices(one_and_eight):
    one, eight = one_and_eight
    init = one["init"]
    moved = max(
        float(np.abs(a - b).max())
        for a, b in zip(jax.tree.leaves(one["params"]), jax.tree.leaves(init.params))
    )
    state = ("params", "teacher", "opt", "aux")
    diff = max(
        float((np.abs(np.asarray(a, np.float64) - b) / (1.0 + np.abs(b))).max(initial=0.0))
        for key in state
        for a, b in zip(jax.tree.leaves(one[key]), jax.tree.leaves(eight[key]))
    )
    loss_diff = float(np.max(np.abs(np.subtract(one["losses"], eight["losses"]))))
    print(f"params moved {moved:.2e}; 1 vs 8 devices: max |loss diff| {loss_diff:.1e}, ", end="")
    print(f"max relative state diff {diff:.1e}")
    assert moved > 1e-2
    assert loss_diff < 1e-5 and diff < 1e-5
    assert np.abs(one["aux"]["center_dense"]).max() > 0  # the dense centre moved too
