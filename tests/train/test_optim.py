"""DINO AdamW: per-tensor clipping, decay groups, frozen last layer (croc.md §7)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs.dino_coco import get_config
from dense_jax.models.build import param_groups
from dense_jax.train import optim


def _params():
    r = np.random.default_rng(0)
    return {
        "backbone": {
            "blk": {
                "kernel": jnp.asarray(r.normal(size=(4, 3)), jnp.float32),
                "bias": jnp.asarray(r.normal(size=(3,)), jnp.float32),
            }
        },
        "head": {
            "mlp": {"fc1": {"kernel": jnp.asarray(r.normal(size=(3, 5)), jnp.float32)}},
            "last_layer": {
                "kernel": jnp.asarray(r.normal(size=(5, 6)), jnp.float32),
                "g": jnp.ones((1, 6), jnp.float32),
            },
        },
    }


def _tx(clip=0.0):
    config = get_config("smoke")
    config.optim.clip_grad = clip
    params = _params()
    return optim.build(config, param_groups(params)), params


def test_param_groups():
    labels = param_groups(_params())
    assert labels["backbone"]["blk"]["bias"] == "backbone"
    assert labels["head"]["mlp"]["fc1"]["kernel"] == "head"
    assert labels["head"]["last_layer"]["g"] == "last_layer"


def test_clip_per_tensor_is_dino_clip_gradients():
    grads = {"a": jnp.full((2, 2), 3.0), "b": jnp.full((3,), 0.01)}
    out, _ = optim.clip_per_tensor(0.3).update(grads, optax.EmptyState())
    norm_a = 6.0
    np.testing.assert_allclose(out["a"], grads["a"] * 0.3 / (norm_a + 1e-6), rtol=1e-6)
    np.testing.assert_array_equal(out["b"], grads["b"])  # coefficient > 1: untouched


def test_decoupled_decay_only_on_matrices():
    tx, params = _tx()
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params, lr=0.1, wd=0.5, freeze=False)
    # Zero gradients: the Adam part is 0, what remains is −lr·wd·p on decayed tensors.
    np.testing.assert_allclose(
        updates["backbone"]["blk"]["kernel"], -0.05 * params["backbone"]["blk"]["kernel"], rtol=1e-6
    )
    np.testing.assert_array_equal(updates["backbone"]["blk"]["bias"], 0.0)
    np.testing.assert_allclose(
        updates["head"]["last_layer"]["g"], -0.05, rtol=1e-6
    )  # (1, out): decayed as in DINO


def test_freeze_last_layer_leaves_update_and_state_untouched():
    tx, params = _tx(clip=3.0)
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.1, params)
    state0 = tx.init(params)
    updates, state1 = tx.update(grads, state0, params, lr=0.1, wd=0.04, freeze=True)
    last = lambda tree: tree.inner_states["last_layer"]  # noqa: E731
    np.testing.assert_array_equal(updates["head"]["last_layer"]["kernel"], 0.0)
    np.testing.assert_array_equal(updates["head"]["last_layer"]["g"], 0.0)
    chex_equal = jax.tree.map(lambda a, b: np.array_equal(a, b), last(state0[1]), last(state1[1]))
    assert all(jax.tree.leaves(chex_equal))
    assert np.any(updates["head"]["mlp"]["fc1"]["kernel"] != 0)
    # Unfrozen later: its first update is a first Adam step (own count), like torch's per-param step.
    fresh, _ = tx.update(grads, state0, params, lr=0.1, wd=0.04, freeze=False)
    unfrozen, _ = tx.update(grads, state1, params, lr=0.1, wd=0.04, freeze=False)
    np.testing.assert_array_equal(
        unfrozen["head"]["last_layer"]["kernel"], fresh["head"]["last_layer"]["kernel"]
    )
