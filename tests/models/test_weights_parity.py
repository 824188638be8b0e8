"""Parity with the official DINOv2 implementation (issue 2 §4), torch CPU, fp32.

Random-initialised official models are exported, imported, and run on the same images;
CLS and patch tokens must agree to 1e-4. LayerScale gammas and LayerNorm affine params are
re-randomised so that every block contributes (the 1e-5 LayerScale init would hide bugs).
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dense_jax.models import weights
from dense_jax.models.registry import create, variant_config

torch = pytest.importorskip("torch")
vision_transformer = pytest.importorskip("dinov2.models.vision_transformer")
pytestmark = pytest.mark.torch

TOL = 1e-4


def _official(patch, img_size, layerscale, seed=0):
    torch.manual_seed(seed)
    model = vision_transformer.vit_small(
        patch_size=patch, img_size=img_size, block_chunks=0, init_values=1e-5 if layerscale else None
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("gamma"):
                param.copy_(0.5 + torch.rand_like(param))
            elif "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
            elif name in ("cls_token", "mask_token"):
                param.normal_(0.0, 0.02)
    return model.eval()


def _state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _torch_tokens(model, images, registers=None):
    """CLS and patch tokens of the official model; `registers` inserts register tokens
    after CLS (after the position embedding), as the official register models do."""
    x = torch.from_numpy(images.transpose(0, 3, 1, 2))
    with torch.no_grad():
        tokens = model.prepare_tokens_with_masks(x)
        skip = 1
        if registers is not None:
            reg = torch.from_numpy(registers).expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([tokens[:, :1], reg, tokens[:, 1:]], dim=1)
            skip += registers.shape[1]
        for blk in model.blocks:
            tokens = blk(tokens)
        tokens = model.norm(tokens)
    return tokens[:, 0].numpy(), tokens[:, skip:].numpy()


def _compare(variant, cfg_overrides, state, torch_model, hw, registers=None):
    cfg = variant_config(variant, **cfg_overrides)
    params = weights.official_to_flax(state, cfg)
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, *hw, 3)).astype(np.float32)
    out = jax.jit(create(variant, **cfg_overrides).apply)({"params": params}, jnp.asarray(images))
    cls_ref, patch_ref = _torch_tokens(torch_model, images, registers)
    patch = np.asarray(out["patch"]).reshape(patch_ref.shape)
    d_cls = float(np.abs(np.asarray(out["cls"]) - cls_ref).max())
    d_patch = float(np.abs(patch - patch_ref).max())
    print(f"\n[parity] {variant} {hw}: max|dCLS|={d_cls:.2e} max|dpatch|={d_patch:.2e}")
    assert d_cls <= TOL and d_patch <= TOL
    return params, out


@pytest.fixture(scope="module")
def vits14():
    model = _official(14, 518, layerscale=True)
    return model, _state(model)


def dino_v1(patch: int):
    """(official DINO v1 ViT-S/`patch` at 224, its state dict without DINOv2's mask token)."""
    model = _official(patch, 224, layerscale=False)
    state = _state(model)
    state.pop("mask_token")  # DINO v1 checkpoints carry no mask token
    return model, state


@pytest.fixture(scope="module")
def vits16():
    return dino_v1(16)


@pytest.mark.parametrize("hw", [(224, 224), (518, 392)])
def test_dinov2_vits14_parity(vits14, hw):
    model, state = vits14
    _compare("dinov2_vits14", {}, state, model, hw)


@pytest.mark.parametrize("hw", [(224, 224), (320, 240)])
def test_dino_vits16_parity(vits16, hw):
    model, state = vits16
    _compare("dino_vits16", {}, state, model, hw)


def test_native_size_skips_interpolation(vits14):
    """At 518x518 the references use the stored embedding as is (no +0.1 resize)."""
    model, state = vits14
    _compare("dinov2_vits14", {}, state, model, (518, 518))


def test_registers_load_and_are_dropped(vits14):
    model, state = vits14
    rng = np.random.default_rng(3)
    registers = rng.normal(0, 0.5, size=(1, 4, 384)).astype(np.float32)
    reg_state = dict(state, register_tokens=registers)
    # Same interpolation call as the official code under test (offset 0.1, no antialias);
    # the antialiased register-model resize is checked against torch in test_pos_embed.py.
    params, out = _compare(
        "dinov2_vits14_reg4",
        {"interp_offset": 0.1, "interp_antialias": False},
        reg_state,
        model,
        (224, 280),
        registers,
    )
    assert out["patch"].shape == (2, 16, 20, 384)
    assert out["registers"].shape == (2, 4, 384)
    np.testing.assert_array_equal(params["register_tokens"], registers)


def test_export_import_export_is_bitwise(vits14, vits16):
    for variant, (_, state) in (("dinov2_vits14", vits14), ("dino_vits16", vits16)):
        cfg = variant_config(variant)
        exported = weights.flax_to_official(weights.official_to_flax(state, cfg), cfg)
        assert sorted(exported) == sorted(state)
        for key, value in state.items():
            assert exported[key].dtype == value.dtype and exported[key].shape == value.shape
            np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_wrapped_checkpoints_and_files(vits16, tmp_path):
    """Training wrappers (DINO/CrIBo teacher-student, Lightning) and .pth/.safetensors files."""
    _, state = vits16
    cfg = variant_config("dino_vits16")
    reference = weights.official_to_flax(state, cfg)
    poisoned = {k: v + 1.0 for k, v in state.items()}
    dino_style = {
        "teacher": {f"backbone.{k}": torch.from_numpy(v) for k, v in state.items()}
        | {"head.mlp.0.weight": torch.zeros(3, 3)},
        "student": {f"module.backbone.{k}": torch.from_numpy(v) for k, v in poisoned.items()},
        "epoch": 3,
    }
    lightning = {
        "state_dict": {f"teacher.{k}": torch.from_numpy(v) for k, v in state.items()}
        | {f"model.{k}": torch.from_numpy(v) for k, v in poisoned.items()}
    }
    for name, obj in (("dino.pth", dino_style), ("lightning.ckpt", lightning)):
        path = tmp_path / name
        torch.save(obj, path)
        params = weights.load_backbone_params(path, cfg)
        jax.tree.map(np.testing.assert_array_equal, params, reference)
    student = weights.load_backbone_params(tmp_path / "dino.pth", cfg, select="student")
    np.testing.assert_array_equal(student["cls_token"], poisoned["cls_token"])


def test_hf_layout_is_renamed(vits14):
    _, state = vits14
    hf = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.mask_token": state["mask_token"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    for i in range(12):
        o, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = np.split(state[o + f"attn.qkv.{kind}"], 3)
            hf |= {
                h + f"attention.attention.query.{kind}": q,
                h + f"attention.attention.key.{kind}": k,
                h + f"attention.attention.value.{kind}": v,
                h + f"attention.output.dense.{kind}": state[o + f"attn.proj.{kind}"],
                h + f"norm1.{kind}": state[o + f"norm1.{kind}"],
                h + f"norm2.{kind}": state[o + f"norm2.{kind}"],
                h + f"mlp.fc1.{kind}": state[o + f"mlp.fc1.{kind}"],
                h + f"mlp.fc2.{kind}": state[o + f"mlp.fc2.{kind}"],
            }
        hf |= {
            h + "layer_scale1.lambda1": state[o + "ls1.gamma"],
            h + "layer_scale2.lambda1": state[o + "ls2.gamma"],
        }
    normalized = weights.normalize_state_dict(hf)
    assert sorted(normalized) == sorted(state)
    for key in state:
        np.testing.assert_array_equal(normalized[key], state[key], err_msg=key)


def test_mismatch_lists_every_problem(vits16):
    _, state = vits16
    bad = dict(state)
    bad.pop("blocks.3.mlp.fc1.bias")
    bad["blocks.0.attn.qkv.weight"] = bad["blocks.0.attn.qkv.weight"][:, :100]
    bad["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(weights.CheckpointMismatchError) as err:
        weights.official_to_flax(bad, variant_config("dino_vits16"))
    message = str(err.value)
    assert "1 missing: blocks.3.mlp.fc1.bias" in message
    assert "1 unexpected: extra.weight" in message
    assert "1 mis-shaped: blocks.0.attn.qkv.weight" in message
    with pytest.raises(weights.CheckpointMismatchError, match="register_tokens"):
        weights.official_to_flax(state, variant_config("dino_vits16", num_registers=4))


def test_convert_cli_round_trip(vits14, tmp_path):
    """Official .pth -> .safetensors -> .pth through the CLI, bit for bit."""
    model, state = vits14
    src = tmp_path / "official.pth"
    torch.save(model.state_dict(), src)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for a, b in ((src, tmp_path / "x.safetensors"), (tmp_path / "x.safetensors", tmp_path / "back.pth")):
        proc = subprocess.run(
            [sys.executable, "-m", "dense_jax.convert", "--in", str(a), "--out", str(b)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert "dinov2_vits14" in proc.stdout
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert sorted(back) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key].numpy(), value, err_msg=key)
    _, params = weights.load("auto", tmp_path / "x.safetensors")
    np.testing.assert_array_equal(np.asarray(params["pos_embed"]), state["pos_embed"])


def _official_outputs(model, images, n_blocks):
    """The official model's q/k/v (last block, from its fused qkv projection), CLS->patch
    attention, pre-norm patch tokens (`forward_features`) and normed patch tokens of the last
    `n_blocks` blocks (`get_intermediate_layers`), as numpy in our layouts."""
    x = torch.from_numpy(images.transpose(0, 3, 1, 2))
    captured = {}
    hook = model.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, out: captured.update(qkv=out))
    with torch.no_grad():
        features = model.forward_features(x)
        last = model.get_intermediate_layers(x, n=n_blocks, norm=True)
    hook.remove()
    batch, tokens, _ = captured["qkv"].shape
    q, k, v = captured["qkv"].reshape(batch, tokens, 3, model.num_heads, -1).permute(2, 0, 3, 1, 4)
    attn = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    return {
        "q": q.numpy(),
        "k": k.numpy(),
        "v": v.numpy(),
        "attn_cls": attn[:, :, 0, 1:].numpy(),
        "patch_prenorm": features["x_prenorm"][:, 1:].numpy(),
        "last_blocks": np.stack([t.numpy() for t in last]),
    }


def test_every_output_matches_the_official_model(vits14):
    """q/k/v, attn_cls, patch_prenorm and last_blocks, not only CLS and patch tokens."""
    model, state = vits14
    params = weights.official_to_flax(state, variant_config("dinov2_vits14"))
    images = np.random.default_rng(2).normal(size=(2, 112, 140, 3)).astype(np.float32)
    ours = jax.jit(create("dinov2_vits14", n_last_blocks=3).apply)({"params": params}, jnp.asarray(images))
    ref = _official_outputs(model, images, 3)
    grid = (8, 10)
    for key, want in ref.items():
        got = np.asarray(ours[key])
        if key == "attn_cls":
            got = got.reshape(*got.shape[:2], -1)
        elif key == "patch_prenorm":
            got = got.reshape(got.shape[0], -1, got.shape[-1])
        elif key == "last_blocks":
            got = got.reshape(*got.shape[:2], -1, got.shape[-1])
        assert got.shape == want.shape, key
        np.testing.assert_allclose(got, want, atol=TOL, rtol=1e-4, err_msg=key)
    assert ours["attn_cls"].shape[2:] == grid


def test_save_official_loads_into_the_official_model(vits14, tmp_path):
    """Params trained here (the imported ones, moved) -> save_official(.pth) -> the official
    model's strict load_state_dict -> the same CLS and patch tokens as ours."""
    _, state = vits14
    cfg = variant_config("dinov2_vits14")
    params = weights.official_to_flax(state, cfg)
    noise = np.random.default_rng(4)
    moved = jax.tree.map(lambda a: a + 0.01 * noise.normal(size=a.shape).astype(np.float32), params)
    weights.save_official(moved, cfg, tmp_path / "ours.pth")
    official = _official(14, 518, layerscale=True, seed=7)  # other weights until loaded
    official.load_state_dict(torch.load(tmp_path / "ours.pth", weights_only=True), strict=True)
    images = np.random.default_rng(5).normal(size=(2, 84, 98, 3)).astype(np.float32)
    ours = jax.jit(create("dinov2_vits14").apply)({"params": moved}, jnp.asarray(images))
    cls_ref, patch_ref = _torch_tokens(official, images)
    np.testing.assert_allclose(np.asarray(ours["cls"]), cls_ref, atol=TOL)
    np.testing.assert_allclose(np.asarray(ours["patch"]).reshape(patch_ref.shape), patch_ref, atol=TOL)


# bf16 speed settings against fp32 on the parity inputs (issue 16 item 2): max |Δ| / max |fp32|
# per output. Measured on the CPU (2026-12-03): bf16 compute ≤ 1.1e-2 (cls the largest), with
# the bf16 residual stream ≤ 1.7e-2 (cls; patch 1.5e-2); the bounds leave ~2× headroom.
BF16_TOL = {"compute": 2.5e-2, "compute_and_residual": 4e-2}


@pytest.mark.parametrize("setting", sorted(BF16_TOL))
def test_bfloat16_paths_stay_close_to_fp32(vits14, setting):
    _, state = vits14
    params = weights.official_to_flax(state, variant_config("dinov2_vits14"))
    images = jnp.asarray(np.random.default_rng(2).normal(size=(2, 112, 140, 3)).astype(np.float32))
    extra = {"residual_dtype": "bfloat16"} if setting == "compute_and_residual" else {}
    ref = jax.jit(create("dinov2_vits14").apply)({"params": params}, images)
    out = jax.jit(create("dinov2_vits14", dtype="bfloat16", **extra).apply)({"params": params}, images)
    errors = {
        k: float(jnp.abs(out[k].astype(jnp.float32) - ref[k]).max() / jnp.abs(ref[k]).max())
        for k in ("cls", "patch", "patch_prenorm", "q", "k", "v", "attn_cls", "last_blocks")
    }
    print(f"\n[bf16 {setting}] " + " ".join(f"{k}={v:.1e}" for k, v in errors.items()))
    assert 0 < max(errors.values()) <= BF16_TOL[setting], errors
