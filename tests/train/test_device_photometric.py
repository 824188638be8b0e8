"""The trainer with ``data.device_photometric`` (DINO smoke config, 8 devices): the host
batch carries uint8 views and their draws, the step's preprocessing turns them into the PIL
path's views, and one step from the same init gives the PIL path's loss, metrics and
updated state. The views agree to the last ulp of the normalisation
(tests/data/test_photometric.py), hence the tolerances."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.dino_coco import get_config
from dense_jax import methods
from dense_jax.data import photometric, pipeline, sources
from dense_jax.train import loop
from dense_jax.train.step import batch_preprocessor


def _first_batch(config):
    config = loop.resolve_config(config, config.data.num_examples)
    data = iter(pipeline.build(config, sources.training_source(config.data), 0, 1))
    batch = next(data)
    data.close()
    return batch


def test_step_preprocessing_turns_uint8_batches_into_the_pil_batch():
    config = get_config("smoke")
    pil = _first_batch(config)
    config.data.device_photometric = True
    device = _first_batch(config)
    for kind in ("global", "local"):
        assert pil[kind].dtype == np.float32 and device[kind].dtype == np.uint8
        assert device[kind].shape == pil[kind].shape
        assert {f"{kind}_{p}" for p in photometric.PARAMS} <= set(device)
    views = jax.jit(batch_preprocessor(config))(
        {k: v for k, v in device.items() if k not in pipeline.HOST_KEYS}
    )
    assert set(views) == set(pil) - set(pipeline.HOST_KEYS)
    for key in views:
        np.testing.assert_allclose(views[key], pil[key], atol=1e-6, rtol=0, err_msg=key)


def _first_step(device_photometric: bool):
    config = get_config("smoke")
    config.data.device_photometric = device_photometric
    mesh, rules = loop.mesh_and_rules(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        trainer = loop.build_trainer(config, methods.get(config.method), mesh, rules)
        data = trainer.data_iterator()
        host_batch = next(data)
        data.close()
        state, metrics = trainer.step(trainer.init(), trainer.device_batch(host_batch), trainer.rng)
        return host_batch, jax.device_get(state.params), jax.device_get(metrics)


@pytest.mark.slow  # two step compiles: 163 s on the shared 2-core CPU (load 19)
def test_device_photometric_step_equals_pil_step():
    host_pil, params_pil, metrics_pil = _first_step(False)
    host_dev, params_dev, metrics_dev = _first_step(True)
    for kind in ("global", "local"):
        assert host_pil[kind].dtype == np.float32 and host_dev[kind].dtype == np.uint8
        assert host_dev[kind].shape == host_pil[kind].shape
        assert host_dev[kind].nbytes * 4 == host_pil[kind].nbytes
        assert {f"{kind}_{p}" for p in photometric.PARAMS} <= set(host_dev)
    np.testing.assert_array_equal(host_dev["global_box"], host_pil["global_box"])
    assert set(metrics_dev) == set(metrics_pil)
    for key in metrics_pil:
        np.testing.assert_allclose(metrics_dev[key], metrics_pil[key], rtol=1e-5, atol=1e-7, err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params_dev, params_pil)
    assert not np.allclose(metrics_pil["grad_norm"], 0.0)
