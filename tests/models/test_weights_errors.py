"""Weight files that are not what they should be: one clear line naming the file, never
torch's or numpy's advice to unpickle; why no variant fits; hints that do not repeat the
variant that failed; harmless unused keys ignored while real mismatches refuse."""

import logging
import os

import jax
import numpy as np
import pytest

from configs.eval import base
from dense_jax import evaluate
from dense_jax.models import weights
from dense_jax.models.registry import variant_config
from tests.core.test_errors import exit_line


@pytest.fixture(scope="module")
def demo_state():
    """An official-layout state dict of vit_demo16 (random init)."""
    _, params = weights.load("vit_demo16")
    return weights.flax_to_official(jax.device_get(params), variant_config("vit_demo16"))


@pytest.mark.parametrize("name", ["random.pth", "random.safetensors", "random.npz"])
def test_random_bytes_are_not_weights(tmp_path, name):
    pytest.importorskip("torch")
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(weights.WeightsFileError) as err:
        weights.read_state_dict(path)
    message = str(err.value)
    assert message.startswith(f"{path} is not a ") and "\n" not in message
    assert "weights_only" not in message and "pickle" not in message.replace("unpickles", "")


def test_pickled_objects_are_named_without_unsafe_advice(tmp_path):
    torch = pytest.importorskip("torch")
    import argparse

    torch.save({"args": argparse.Namespace(lr=1), "teacher": {"w": torch.zeros(2)}}, tmp_path / "ckpt.pth")
    with pytest.raises(weights.WeightsFileError, match="argparse.Namespace") as err:
        weights.read_state_dict(tmp_path / "ckpt.pth")
    assert "weights_only" not in str(err.value)


def test_auto_variant_says_why(tmp_path, demo_state):
    odd = {k: v for k, v in demo_state.items() if not k.startswith("blocks.3.")}  # depth 3
    np.savez(tmp_path / "odd.npz", **odd)
    with pytest.raises(weights.CheckpointMismatchError) as err:
        weights.load("auto", tmp_path / "odd.npz")
    where = tmp_path / "odd.npz"
    assert f"variant of {where}: its architecture (dim 192, patch 16, depth 3" in str(err.value)
    np.savez(tmp_path / "headless.npz", **{k: v for k, v in odd.items() if k != "pos_embed"})
    with pytest.raises(weights.CheckpointMismatchError, match="the file has no pos_embed"):
        weights.load("auto", tmp_path / "headless.npz")


def test_hint_never_names_the_variant_that_failed(demo_state):
    bad = dict(demo_state, **{"extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(weights.CheckpointMismatchError) as err:
        weights.official_to_flax(bad, variant_config("vit_demo16"))
    assert "1 unexpected: extra.weight" in str(err.value) and "looks like variant" not in str(err.value)
    with pytest.raises(weights.CheckpointMismatchError, match="looks like variant 'vit_demo16'"):
        weights.official_to_flax(demo_state, variant_config("vit_tiny16"))


def test_mask_token_is_reported_and_ignored(demo_state, caplog):
    with_mask = dict(demo_state, mask_token=np.zeros((1, 192), np.float32))  # DINOv2 code adds it
    with caplog.at_level(logging.WARNING):
        params = weights.official_to_flax(with_mask, variant_config("vit_demo16"))
    assert "ignoring mask_token" in caplog.text
    np.testing.assert_array_equal(params["cls_token"], demo_state["cls_token"])
    wrong = dict(with_mask, **{"blocks.0.norm1.weight": np.zeros(7, np.float32)})
    with pytest.raises(weights.CheckpointMismatchError, match="mis-shaped: blocks.0.norm1.weight"):
        weights.official_to_flax(wrong, variant_config("vit_demo16"))


def test_evaluate_cli_shows_weight_errors_as_one_line(tmp_path, demo_state):
    pytest.importorskip("torch")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(os.urandom(4096))
    np.savez(tmp_path / "odd.npz", **{k: v for k, v in demo_state.items() if k != "norm.bias"})
    for weights_file, words in (
        (bad, (f"{bad} is not a PyTorch checkpoint",)),
        (tmp_path / "odd.npz", ("checkpoint does not fit the backbone", "1 missing: norm.bias")),
    ):
        config = base.make("kmeans", "voc", "demo")
        config.weights = str(weights_file)
        line = exit_line(evaluate.main, config, str(tmp_path / "out"), words=words)
        assert "weights_only" not in line
