"""Torch-exact bicubic resize matrices (neco.md §2, comus.md §3)."""

import numpy as np
import pytest

from dense_jax.models.pos_embed import bicubic_matrix, resize_matrices


def test_neco_row_zero_matches_spec():
    """neco.md §2: row 0 of W for g=7 from the 37 grid with the +0.1 offset."""
    expected = [0.0, -0.063372, 0.976367, 0.094490, -0.007485, 0.0]
    np.testing.assert_allclose(bicubic_matrix(37, 7, 0.1, False)[0, :6], expected, atol=1e-6)


@pytest.mark.parametrize("antialias", [False, True])
def test_rows_sum_to_one(antialias):
    for out in (7, 16, 32, 40, 74):
        np.testing.assert_allclose(
            bicubic_matrix(37, out, 0.0 if antialias else 0.1, antialias).sum(1), 1.0, atol=1e-12
        )


def test_native_square_grid_is_not_resized():
    assert resize_matrices(37, (37, 37), 0.1, False) is None
    rows, cols = resize_matrices(37, (37, 28), 0.1, False)
    assert rows.shape == (37, 37) and cols.shape == (28, 37)
    assert not np.allclose(rows, np.eye(37))  # the +0.1 offset resamples even at the native size


@pytest.mark.torch
@pytest.mark.parametrize("out", [7, 16, 28, 32, 37, 40, 74])
@pytest.mark.parametrize("offset,antialias", [(0.1, False), (0.0, True), (0.0, False)])
def test_matches_torch_interpolate(out, offset, antialias):
    torch = pytest.importorskip("torch")
    grid = 37
    x = torch.randn(1, 3, grid, grid, dtype=torch.float64, generator=torch.Generator().manual_seed(out))
    kwargs = {"scale_factor": ((out + offset) / grid,) * 2} if offset else {"size": (out, out)}
    ref = torch.nn.functional.interpolate(x, mode="bicubic", antialias=antialias, **kwargs).numpy()
    w = bicubic_matrix(grid, out, offset, antialias)
    ours = np.einsum("ij,bcjk,lk->bcil", w, x.numpy(), w)
    assert ref.shape == ours.shape
    np.testing.assert_allclose(ours, ref, atol=1e-12)
