"""Schedules against DINO's array definitions (croc.md §7, check 11)."""

import jax.numpy as jnp
import numpy as np
import pytest

from configs.dino_coco import get_config
from dense_jax.core import schedules


def dino_cosine_array(base, final, epochs, niter, warmup_epochs=0, start_warmup=0.0):
    """DINO utils.cosine_scheduler, re-derived from its definition."""
    warmup_iters = warmup_epochs * niter
    warm = np.linspace(start_warmup, base, warmup_iters) if warmup_epochs > 0 else np.zeros(0)
    iters = np.arange(epochs * niter - warmup_iters)
    return np.concatenate([warm, final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))])


@pytest.mark.parametrize("warmup_epochs", [0, 1, 10])
def test_cosine_matches_dino_array(warmup_epochs):
    epochs, niter = 30, 7
    ref = dino_cosine_array(2e-3, 1e-6, epochs, niter, warmup_epochs)
    steps = np.array(
        [0, 1, warmup_epochs * niter - 1, warmup_epochs * niter, 100, len(ref) - 1, len(ref) + 5]
    )
    steps = np.clip(steps, 0, None)
    got = np.asarray(schedules.cosine(jnp.asarray(steps), 2e-3, 1e-6, epochs * niter, warmup_epochs * niter))
    np.testing.assert_allclose(got, ref[np.minimum(steps, len(ref) - 1)], rtol=1e-5, atol=1e-9)


def test_paper_schedule_values():
    """croc.md check 11 on the full DINO-COCO config (462 iterations per epoch)."""
    config = get_config()
    config.train.steps_per_epoch = 462
    s = schedules.Schedules(config)
    warm = config.optim.warmup_epochs * 462
    assert s.total_steps == 300 * 462
    np.testing.assert_allclose(s.lr(warm - 1), 5e-4, rtol=1e-6)
    np.testing.assert_allclose(s.lr(0), 0.0)
    np.testing.assert_allclose(s.weight_decay(0), 0.04, rtol=1e-6)
    np.testing.assert_allclose(s.momentum(0), 0.996, rtol=1e-7)
    ref_wd = dino_cosine_array(0.04, 0.4, 300, 462)
    for step in (1, 5000, 70000, 138599):
        np.testing.assert_allclose(s.weight_decay(step), ref_wd[step], rtol=1e-5)
    assert bool(s.freeze_last_layer(461)) and not bool(s.freeze_last_layer(462))


def test_teacher_temperature_per_epoch():
    temps = np.linspace(0.04, 0.07, 30)
    for epoch in (0, 1, 15, 29, 30, 299):
        expected = temps[epoch] if epoch < 30 else 0.07
        np.testing.assert_allclose(schedules.per_epoch_linear(epoch, 0.04, 0.07, 30), expected, rtol=1e-6)
