"""Flax ViT: outputs, registers, attention, partitioning names, dtypes, stochastic depth."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dense_jax.models import load
from dense_jax.models.registry import create, variant_config

SHAPES = dict(patch_size=14, embed_dim=48, depth=3, num_heads=3, pos_grid=4, layerscale=1.0)


def _init(model, hw=(56, 70)):
    x = jax.random.normal(jax.random.key(1), (2, *hw, 3))
    variables = model.init(jax.random.key(0), x)
    return x, variables


def test_output_dict_shapes_with_registers():
    model = create("vit_demo14", **SHAPES, n_last_blocks=2)
    x, variables = _init(model)
    out = model.apply({"params": nn.unbox(variables["params"])}, x)
    assert out["cls"].shape == (2, 48)
    assert out["patch"].shape == out["patch_prenorm"].shape == (2, 4, 5, 48)
    assert out["registers"].shape == (2, 4, 48)
    for key in "qkv":
        assert out[key].shape == (2, 3, 21, 16)  # CLS + 20 patches, registers removed
    assert out["attn_cls"].shape == (2, 3, 4, 5)
    assert out["last_blocks"].shape == (2, 2, 4, 5, 48)
    np.testing.assert_allclose(out["last_blocks"][-1], out["patch"], atol=1e-6)
    # CLS attention over patches is a part of a softmax that also covers CLS and registers.
    mass = np.asarray(out["attn_cls"].sum((-1, -2)))
    assert np.all(mass > 0) and np.all(mass < 1)


def test_registers_do_not_change_patch_count_and_matter():
    model = create("vit_demo14", **SHAPES)
    x, variables = _init(model)
    params = nn.unbox(variables["params"])
    out = model.apply({"params": params}, x)
    bumped = jax.tree.map(lambda a: a, params)
    bumped["register_tokens"] = params["register_tokens"] + 1.0
    out2 = model.apply({"params": bumped}, x)
    assert out2["patch"].shape == out["patch"].shape
    assert float(jnp.abs(out2["patch"] - out["patch"]).max()) > 1e-5  # registers are attended to


def test_every_param_has_logical_names():
    _, variables = _init(create("vit_demo14", **SHAPES))
    boxed = jax.tree.leaves(variables["params"], is_leaf=lambda v: isinstance(v, nn.Partitioned))
    assert boxed and all(isinstance(v, nn.Partitioned) for v in boxed)
    specs = nn.get_partition_spec(variables)["params"]
    assert specs["block_0"]["mlp"]["fc1"]["kernel"] == jax.P("embed", "mlp")
    assert specs["block_0"]["attn"]["qkv"]["kernel"] == jax.P("embed", "qkv")


def test_bfloat16_compute_keeps_fp32_params():
    model = create("vit_demo16", dtype="bfloat16")
    x, variables = _init(model, (96, 96))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(nn.unbox(variables["params"])))
    out = model.apply(variables, x)
    ref = create("vit_demo16").apply(variables, x)
    assert out["patch"].dtype == jnp.float32
    err = float(jnp.abs(out["patch"] - ref["patch"]).max())
    assert 0 < err < 0.2


def test_drop_path_only_in_training():
    model = create("vit_demo16", drop_path_rate=0.5)
    x, variables = _init(model, (96, 96))
    eval1 = model.apply(variables, x)["patch"]
    eval2 = model.apply(variables, x)["patch"]
    np.testing.assert_array_equal(eval1, eval2)
    train = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(5)})["patch"]
    assert float(jnp.abs(train - eval1).max()) > 1e-3


def test_mask_token_replaces_patches():
    model = create("vit_demo14", **SHAPES)
    x, variables = _init(model)
    masks = jnp.zeros((2, 4, 5), bool).at[:, 0, 0].set(True)
    a = model.apply(variables, x)["patch"]
    b = model.apply(variables, x, masks=masks)["patch"]
    assert float(jnp.abs(a - b).max()) > 1e-4


def test_bad_inputs_are_rejected():
    model = create("vit_demo16")
    with pytest.raises(ValueError, match="divisible"):
        model.init(jax.random.key(0), jnp.zeros((1, 100, 96, 3)))
    with pytest.raises(ValueError, match="unknown backbone variant"):
        create("vit_huge99")
    with pytest.raises(ValueError, match="unknown backbone options"):
        variant_config("dino_vits16", depht=3)


def test_load_random_init_api():
    model, params = load("vit_demo16")
    feats = model.apply({"params": params}, jnp.zeros((1, 64, 96, 3)))
    assert feats["cls"].shape == (1, 192) and feats["patch"].shape == (1, 4, 6, 192)


@pytest.mark.parametrize("policy", ["", "dots_with_no_batch_dims_saveable", "everything_saveable"])
def test_remat_policies_keep_the_gradient(policy):
    model = create("vit_demo14", **SHAPES, drop_path_rate=0.2)
    x, variables = _init(model)
    params = nn.unbox(variables["params"])

    def loss(m, p):
        out = m.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.key(3)})
        return jnp.sum(out["patch"] ** 2) + jnp.sum(out["attn_cls"])

    want = jax.jit(jax.grad(lambda p: loss(model, p)))(params)
    remat = model.clone(remat=True, remat_policy=policy)
    got = jax.jit(jax.grad(lambda p: loss(remat, p)))(params)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_unknown_remat_policy_is_rejected():
    with pytest.raises(ValueError, match="unknown remat_policy"):
        _init(create("vit_demo14", **SHAPES, remat=True, remat_policy="save_all_please"))


def test_residual_dtype_float32_is_the_default_path():
    model = create("vit_demo14", **SHAPES, dtype="bfloat16")
    x, variables = _init(model)
    a = model.apply(variables, x)
    b = model.clone(residual_dtype=jnp.float32).apply(variables, x)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    c = create("vit_demo14", **SHAPES, dtype="bfloat16", residual_dtype="bfloat16").apply(variables, x)
    assert all(c[key].dtype == a[key].dtype for key in a)  # returned tokens stay fp32
    assert float(jnp.abs(c["patch"] - a["patch"]).max()) > 0  # the stream is rounded to bf16
