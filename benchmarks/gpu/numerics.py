"""The GPU suite's numerics checks of the speed settings (issue 16 item 2): every output of a
ViT-S/14 reg4 (random init, fixed images) with the fused cuDNN attention against the XLA
attention, both in bf16, and the bf16 paths against fp32; maximum absolute difference per
output, relative to the fp32 output's largest magnitude. On a CPU (the dry run) the fused
implementation is replaced by jax's default (XLA)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dense_jax.models import build, create

OUTPUTS = ("cls", "patch", "q", "k", "v", "attn_cls", "last_blocks")


def attention_and_dtype_differences(size: int = 224, batch: int = 2, depth: int = 12) -> dict:
    """{setting: {output: max |Δ| / max |fp32 output|}} against the fp32 XLA-attention model
    (`depth` blocks; the dry run uses fewer)."""
    fused = "cudnn" if jax.devices()[0].platform == "gpu" else None
    base = create("dinov2_vits14_reg4", depth=depth)
    key_p, key_x = jax.random.split(jax.random.key(0))
    images = jax.random.normal(key_x, (batch, size, size, 3))
    params = nn.unbox(jax.jit(lambda k: build.init_variables(base, k, (1, size, size, 3))[0])(key_p))

    def outputs(**settings):
        out = jax.jit(base.clone(**settings).apply)({"params": params}, images)
        return {k: out[k].astype(jnp.float32) for k in OUTPUTS}

    ref = outputs(attention_impl="xla")
    settings = {
        "bf16_xla": dict(dtype=jnp.bfloat16, attention_impl="xla"),
        "bf16_fused": dict(dtype=jnp.bfloat16, attention_impl=fused),
        "bf16_fused_bf16_residual": dict(
            dtype=jnp.bfloat16, residual_dtype=jnp.bfloat16, attention_impl=fused
        ),
    }
    result = {"fused_impl": fused or "default"}
    for name, kw in settings.items():
        got = outputs(**kw)
        result[name] = {
            k: round(float(jnp.abs(got[k] - ref[k]).max() / jnp.abs(ref[k]).max()), 5) for k in OUTPUTS
        }
    xla, fus = outputs(**settings["bf16_xla"]), outputs(**settings["bf16_fused"])
    result["fused_vs_xla_bf16"] = {
        k: round(float(jnp.abs(fus[k] - xla[k]).max() / jnp.abs(ref[k]).max()), 5) for k in OUTPUTS
    }
    return result
