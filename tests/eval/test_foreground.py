"""CBFE attention foreground (evaluation.md §3c, case F of §6): kept attention mass, the
torchvision Gaussian blur, small-component removal, per-image cluster precision."""

import types

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from dense_jax.eval import foreground


def test_case_f_mass_threshold():
    kept = foreground.keep_mass(jnp.asarray([[[0.05, 0.15], [0.3, 0.5]]]), 0.65)
    np.testing.assert_array_equal(kept, [[[False, False], [True, True]]])


@pytest.mark.parametrize("tau, extra", [(0.65, False), (0.7, True)])
def test_kept_mass_on_a_constructed_map(tau, extra):
    """4 bright cells hold 0.66 of the mass, 12 dim ones 0.34 (∝ 1..12): τ = 0.65 keeps exactly
    the bright cells; τ = 0.7 also needs the brightest dim cell (0.0523; 0.66 + 0.0523 >= 0.7)."""
    dim = 0.34 * np.arange(1, 13) / 78
    values = np.concatenate([[0.165] * 4, dim])
    order = np.random.default_rng(0).permutation(16)
    attn = values[order].reshape(1, 4, 4)
    kept = np.asarray(foreground.keep_mass(jnp.asarray(attn * 7.0, jnp.float32), tau))  # scale-free
    expected = (values >= 0.165) | (extra & (values == dim[-1]))
    np.testing.assert_array_equal(kept.ravel(), expected[order])
    mass = attn[kept].sum()
    assert mass >= tau and mass - attn[kept].min() < tau  # the smallest set reaching τ


def test_kept_mass_is_the_smallest_top_set_on_random_maps():
    attn = np.random.default_rng(1).random((20, 7, 7)).astype(np.float32)
    kept = np.asarray(foreground.keep_mass(jnp.asarray(attn), 0.65))
    for a, k in zip(attn / attn.sum((1, 2), keepdims=True), kept):
        assert a[k].sum() >= 0.65 - 1e-6 and a[k].sum() - a[k].min() < 0.65
        assert a[k].min() >= a[~k].max()  # the kept cells are the largest ones


def test_gaussian_blur_is_torchvision_reflect():
    """7×7, σ = 0.6: torchvision's kernel (normalised exp(-x²/2σ²) on -3..3) with reflect
    padding, i.e. scipy's "mirror" mode."""
    x = np.arange(-3, 4)
    k1 = np.exp(-0.5 * (x / 0.6) ** 2)
    k1 /= k1.sum()
    maps = np.random.default_rng(2).random((3, 9, 11)).astype(np.float32)
    ours = np.asarray(foreground.blur(jnp.asarray(maps), 7, 0.6))
    for m, o in zip(maps, ours):
        np.testing.assert_allclose(o, ndimage.correlate(m, np.outer(k1, k1), mode="mirror"), atol=1e-6)
    delta = np.zeros((1, 9, 9), np.float32)
    delta[0, 4, 4] = 1.0
    np.testing.assert_allclose(
        foreground.blur(jnp.asarray(delta), 7, 0.6)[0, 1:8, 1:8], np.outer(k1, k1), atol=1e-7
    )


def test_small_components_are_removed_with_8_connectivity():
    m = np.zeros((1, 6, 6), bool)
    m[0, 0, 0] = True  # single cell: removed
    m[0, 2, 0] = m[0, 3, 1] = True  # diagonal pair (one 8-connected component of 2): removed
    m[0, 0, 3] = m[0, 1, 4] = m[0, 2, 5] = True  # diagonal chain of 3: kept
    out = foreground.remove_small(m, 3)
    expected = np.zeros_like(m)
    expected[0, 0, 3] = expected[0, 1, 4] = expected[0, 2, 5] = True
    np.testing.assert_array_equal(out, expected)


def test_attention_foreground_end_to_end():
    """A 2×2 block (0.3 each) and an isolated 0.25 cell on a 0.001 background: τ = 0.85 needs
    both (1.45 of 1.509), then the isolated cell goes as a small component. σ -> 0 (no blur)."""
    attn = np.full((1, 8, 8), 0.001, np.float32)
    attn[0, 2:4, 2:4] = 0.3
    attn[0, 6, 6] = 0.25
    cfg = types.SimpleNamespace(kernel=7, sigma=0.01, tau=0.85, min_component=3)
    fg = foreground.attention_foreground(attn, cfg)
    expected = np.zeros_like(fg)
    expected[0, 2:4, 2:4] = True
    np.testing.assert_array_equal(fg, expected)
    cfg.tau = 0.65  # the block alone holds enough
    np.testing.assert_array_equal(foreground.attention_foreground(attn, cfg), expected)


def test_cluster_precision_is_a_mean_of_per_image_precisions():
    ids = np.asarray([[[0, 0], [1, 1]], [[0, 2], [2, 2]]])
    fg = np.asarray([[[1, 0], [1, 1]], [[0, 1], [0, 0]]], bool)
    np.testing.assert_allclose(foreground.cluster_precision(ids, fg, 4)[:3], [0.25, 1.0, 1 / 3])
    assert np.isnan(foreground.cluster_precision(ids, fg, 4)[3])  # cluster 3 never occurs
