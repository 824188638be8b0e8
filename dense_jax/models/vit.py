"""Flax (linen) Vision Transformer covering the DINO and DINOv2 backbones.

One module serves every backbone of the papers (neco.md §2, croc.md §3, comus.md §3):
pre-LN blocks with qkv bias, LayerNorm eps 1e-6, exact-erf GELU, optional LayerScale
(DINOv2), optional register tokens (inserted after CLS, without position embedding), and
position embeddings resized with torch-exact bicubic matrices (`pos_embed.py`).

``VisionTransformer.__call__(images)`` takes float NHWC ImageNet-normalised images whose
sides are multiples of the patch size and returns a dict:

==================  ==========================  ==========================================
key                 shape                       meaning
==================  ==========================  ==========================================
``cls``             (B, D)                      CLS token after the final norm
``patch``           (B, h, w, D)                patch tokens after the final norm
``patch_prenorm``   (B, h, w, D)                patch tokens before the final norm
``registers``       (B, R, D)                   register tokens after the final norm
``q``, ``k``, ``v`` (B, heads, 1 + h*w, D/heads) last block's queries/keys/values, CLS row
                                                first, registers removed (CrOC clustering)
``attn_cls``        (B, heads, h, w)            last block's CLS->patch attention
                                                (softmax taken over all tokens)
``last_blocks``     (n, B, h, w, D)             normed patch tokens of the last n blocks,
                                                oldest first (concatenation evaluations)
==================  ==========================  ==========================================

Every parameter carries logical axis names (see `dense_jax.core.sharding`) so that the
trainer can shard it data-parallel or FSDP.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dense_jax.models.pos_embed import resize_matrices

Dtype = Any

_trunc02 = nn.initializers.truncated_normal(stddev=0.02)


def _logical(init: Callable, names: tuple[str | None, ...]) -> Callable:
    return nn.with_logical_partitioning(init, names)


def _dense(features: int, names: tuple[str, str], dtype: Dtype, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
        kernel_init=_logical(_trunc02, names),
        bias_init=_logical(nn.initializers.zeros, (names[1],)),
    )


def _layer_norm(name: str) -> nn.LayerNorm:
    # Statistics in fp32 whatever the compute dtype; output cast by the next layer.
    return nn.LayerNorm(
        epsilon=1e-6,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        name=name,
        scale_init=_logical(nn.initializers.ones, ("norm",)),
        bias_init=_logical(nn.initializers.zeros, ("norm",)),
    )


class DropPath(nn.Module):
    """Per-sample stochastic depth, rescaled by 1/keep as in DINO/timm."""

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class LayerScale(nn.Module):
    init_value: float

    @nn.compact
    def __call__(self, x):
        gamma = self.param(
            "gamma",
            _logical(nn.initializers.constant(self.init_value), ("norm",)),
            (x.shape[-1],),
            jnp.float32,
        )
        return x * gamma.astype(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection ([q | k | v], heads-major)."""

    num_heads: int
    dtype: Dtype
    return_details: bool = False  # also return q/k/v and the CLS attention row (last block)
    implementation: str | None = None  # jax.nn.dot_product_attention backend

    @nn.compact
    def __call__(self, x):
        batch, tokens, dim = x.shape
        head_dim = dim // self.num_heads
        qkv = _dense(3 * dim, ("embed", "qkv"), self.dtype, "qkv")(x)
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, H, hd)
        out = jax.nn.dot_product_attention(q, k, v, implementation=self.implementation)
        details = {}
        if self.return_details:  # only the CLS query's row: O(T), not the (T, T) matrix
            logits = jnp.einsum(
                "bhd,bkhd->bhk", q[:, 0] * head_dim**-0.5, k, preferred_element_type=jnp.float32
            )
            details = {"cls_probs": jax.nn.softmax(logits, axis=-1), "q": q, "k": k, "v": v}
        out = out.reshape(batch, tokens, dim)
        return _dense(dim, ("qkv", "embed"), self.dtype, "proj")(out), details


class Mlp(nn.Module):
    hidden: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x):
        h = _dense(self.hidden, ("embed", "mlp"), self.dtype, "fc1")(x)
        h = nn.gelu(h, approximate=False)
        return _dense(x.shape[-1], ("mlp", "embed"), self.dtype, "fc2")(h)


class Block(nn.Module):
    """Pre-LN transformer block: x += ls1·attn(norm1 x); x += ls2·mlp(norm2 x)."""

    num_heads: int
    mlp_ratio: float
    layerscale: float | None
    drop_path: float
    dtype: Dtype
    return_details: bool = False
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        dim = x.shape[-1]
        y, details = Attention(
            self.num_heads, self.dtype, self.return_details, self.attention_impl, name="attn"
        )(_layer_norm("norm1")(x).astype(self.dtype))
        if self.layerscale is not None:
            y = LayerScale(self.layerscale, name="ls1")(y)
        x = x + DropPath(self.drop_path)(y, deterministic).astype(x.dtype)  # keeps the residual dtype
        y = Mlp(int(dim * self.mlp_ratio), self.dtype, name="mlp")(_layer_norm("norm2")(x).astype(self.dtype))
        if self.layerscale is not None:
            y = LayerScale(self.layerscale, name="ls2")(y)
        x = x + DropPath(self.drop_path)(y, deterministic).astype(x.dtype)
        return x, details


def _fan_in_uniform(key, shape, dtype=jnp.float32, fan_in=None):
    """PyTorch's default Conv2d init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    bound = 1.0 / np.sqrt(fan_in if fan_in is not None else np.prod(shape[:-1]))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patch projection (a stride-p conv written as one einsum).

    ``kernel`` has the Flax conv layout (p, p, C_in, D).
    """

    patch_size: int
    embed_dim: int
    dtype: Dtype

    @nn.compact
    def __call__(self, images):
        batch, height, width, channels = images.shape
        p = self.patch_size
        fan_in = p * p * channels
        kernel = self.param(
            "kernel",
            _logical(_fan_in_uniform, (None, None, None, "embed")),
            (p, p, channels, self.embed_dim),
            jnp.float32,
        )
        bias = self.param(
            "bias",
            _logical(lambda k, s, d=jnp.float32: _fan_in_uniform(k, s, d, fan_in), ("embed",)),
            (self.embed_dim,),
            jnp.float32,
        )
        patches = images.astype(self.dtype).reshape(batch, height // p, p, width // p, p, channels)
        return jnp.einsum("bhpwqc,pqcd->bhwd", patches, kernel.astype(self.dtype)) + bias.astype(self.dtype)


class VisionTransformer(nn.Module):
    """DINO / DINOv2 ViT. See the module docstring for the returned dict.

    Attributes:
      patch_size, embed_dim, depth, num_heads, mlp_ratio: the architecture.
      pos_grid: side of the trained position-embedding grid (14 for DINO 224/16, 37 for
        DINOv2 518/14).
      layerscale: LayerScale init value (DINOv2: 1e-5) or None (DINO).
      num_registers: register tokens (DINOv2-reg: 4).
      mask_token: whether a mask token parameter exists (DINOv2 checkpoints carry one).
      interp_offset, interp_antialias: the torch interpolation call the checkpoint's
        reference uses (DINO/DINOv2/NeCo: 0.1, False; official DINOv2-reg hub: 0.0, True).
      drop_path_rate: stochastic depth, linearly increasing from 0 over the blocks.
      dtype: compute dtype (params always fp32).
      residual_dtype: dtype of the residual stream between blocks (default float32; "bfloat16"
        halves its memory traffic; the final norm and every returned token are fp32 again).
      n_last_blocks: how many final blocks ``last_blocks`` holds (capped at depth).
      remat: rematerialise each block in the backward pass (memory for compute).
      remat_policy: what a rematerialised block keeps from its forward pass: "" (nothing, the
        default), or a ``jax.checkpoint_policies`` name, e.g. "dots_with_no_batch_dims_saveable"
        (keeps the weight matmuls' outputs, recomputes attention and elementwise ops).
      attention_impl: ``jax.nn.dot_product_attention`` implementation (None, "xla", "cudnn").
    """

    patch_size: int = 16
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    pos_grid: int = 14
    layerscale: float | None = None
    num_registers: int = 0
    mask_token: bool = False
    interp_offset: float = 0.1
    interp_antialias: bool = False
    drop_path_rate: float = 0.0
    dtype: Dtype = jnp.float32
    residual_dtype: Dtype = jnp.float32
    n_last_blocks: int = 4
    remat: bool = False
    remat_policy: str = ""
    attention_impl: str | None = None

    def _position_embedding(self, grid_hw: tuple[int, int]) -> jax.Array:
        dim = self.embed_dim
        pos = self.param(
            "pos_embed",
            _logical(_trunc02, (None, None, "embed")),
            (1, 1 + self.pos_grid**2, dim),
            jnp.float32,
        )
        cls_pos, patch_pos = pos[:, :1], pos[0, 1:].reshape(self.pos_grid, self.pos_grid, dim)
        mats = resize_matrices(self.pos_grid, grid_hw, self.interp_offset, self.interp_antialias)
        if mats is not None:
            rows, cols = (jnp.asarray(m, jnp.float32) for m in mats)
            patch_pos = jnp.einsum(
                "ij,jkd,lk->ild", rows, patch_pos, cols, precision=jax.lax.Precision.HIGHEST
            )
        return jnp.concatenate([cls_pos, patch_pos.reshape(1, -1, dim)], axis=1)

    @nn.compact
    def __call__(
        self, images: jax.Array, masks: jax.Array | None = None, train: bool = False
    ) -> dict[str, jax.Array]:
        batch, height, width, _ = images.shape
        p, dim = self.patch_size, self.embed_dim
        if self.n_last_blocks < 1:
            raise ValueError(f"n_last_blocks must be >= 1, got {self.n_last_blocks}")
        if height % p or width % p:
            raise ValueError(f"image size {(height, width)} is not divisible by patch size {p}")
        gh, gw = height // p, width // p

        x = PatchEmbed(p, dim, self.dtype, name="patch_embed")(images)
        x = x.reshape(batch, gh * gw, dim).astype(jnp.float32)
        if self.mask_token:
            token = self.param(
                "mask_token", _logical(nn.initializers.zeros, (None, "embed")), (1, dim), jnp.float32
            )
            if masks is not None:
                x = jnp.where(masks.reshape(batch, -1, 1), token[None], x)
        elif masks is not None:
            raise ValueError("this backbone has no mask token")

        cls = self.param(
            "cls_token",
            _logical(nn.initializers.normal(1e-6), (None, None, "embed")),
            (1, 1, dim),
            jnp.float32,
        )
        x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, dim)), x], axis=1)
        x = x + self._position_embedding((gh, gw))
        if self.num_registers:
            regs = self.param(
                "register_tokens",
                _logical(nn.initializers.normal(1e-6), (None, None, "embed")),
                (1, self.num_registers, dim),
                jnp.float32,
            )
            x = jnp.concatenate(
                [x[:, :1], jnp.broadcast_to(regs, (batch, self.num_registers, dim)), x[:, 1:]], 1
            )

        block_cls = Block
        if self.remat_policy and not hasattr(jax.checkpoint_policies, self.remat_policy):
            raise ValueError(f"unknown remat_policy {self.remat_policy!r} (a jax.checkpoint_policies name)")
        if self.remat:
            policy = getattr(jax.checkpoint_policies, self.remat_policy) if self.remat_policy else None
            block_cls = nn.remat(Block, static_argnums=(2,), policy=policy)
        x = x.astype(self.residual_dtype)
        rates = np.linspace(0.0, self.drop_path_rate, self.depth)
        norm = _layer_norm("norm")
        first_patch = 1 + self.num_registers
        kept, details = [], {}
        for i in range(self.depth):
            last = i == self.depth - 1
            x, details = block_cls(
                self.num_heads,
                self.mlp_ratio,
                self.layerscale,
                float(rates[i]),
                self.dtype,
                return_details=last,
                attention_impl=self.attention_impl,
                name=f"block_{i}",
            )(x, not train)
            if i >= self.depth - min(self.n_last_blocks, self.depth):
                kept.append(x)
        x = x.astype(jnp.float32)
        normed = norm(x)

        def grid(tokens):
            return tokens[:, first_patch:].reshape(batch, gh, gw, dim)

        def drop_registers(t):  # (B, T, H, hd) -> (B, H, 1 + N, hd)
            t = jnp.concatenate([t[:, :1], t[:, first_patch:]], axis=1)
            return t.transpose(0, 2, 1, 3)

        return {
            "cls": normed[:, 0],
            "patch": grid(normed),
            "patch_prenorm": grid(x),
            "registers": normed[:, 1:first_patch],
            "q": drop_registers(details["q"]),
            "k": drop_registers(details["k"]),
            "v": drop_registers(details["v"]),
            "attn_cls": details["cls_probs"][:, :, first_patch:].reshape(batch, self.num_heads, gh, gw),
            "last_blocks": jnp.stack([grid(norm(t.astype(jnp.float32))) for t in kept]),
        }
