"""COMUS's backbone, DINO ViT-S/8 (comus.md §3, §10.1), against the official implementation
(torch, random weights with re-randomised LayerNorms): CLS (after the final LayerNorm) and patch
tokens to 1e-4 at 224 (the native 28×28 grid) and 256 (32×32, the crop size: the position
embedding resized by torch bicubic with scale 32.1/28, A = -0.75). A wrong GELU (tanh instead of
erf) or LayerNorm eps (1e-5 instead of 1e-6) breaks the 1e-4 match."""

import numpy as np
import pytest

from dense_jax.models.pos_embed import bicubic_matrix

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def vits8():
    from tests.models.test_weights_parity import dino_v1

    return dino_v1(8)


@pytest.mark.parametrize("hw", [(224, 224), (256, 256)])
def test_dino_vits8_matches_the_official_model(vits8, hw):
    from tests.models.test_weights_parity import _compare

    model, state = vits8
    _compare("dino_vits8", {}, state, model, hw)


def test_position_embedding_28_to_32_is_torch_bicubic():
    """DINO's interpolate_pos_encoding at a 256 input: scale_factor (32 + 0.1) / 28, bicubic."""
    x = torch.randn(1, 384, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.functional.interpolate(x, scale_factor=(32.1 / 28,) * 2, mode="bicubic").numpy()
    w = bicubic_matrix(28, 32, 0.1, False)
    np.testing.assert_allclose(np.einsum("ij,bcjk,lk->bcil", w, x.numpy(), w), ref, atol=1e-5)
