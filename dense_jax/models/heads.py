"""Projection heads of the SSL methods (croc.md §6 "Head", cribo.md §6).

`DINOHead` = `ProjectionMLP` (Linear → GELU → ... → Linear to the bottleneck, no BN) →
L2 normalisation → `WeightNormLinear` (bias-free, weight-normalised per output unit). CrOC
and CrIBo share one MLP between a CLS last layer and an object last layer (`DINOHead` with
``dense_dim``). Parameters are fp32 and carry logical axis names like the backbone's.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_trunc02 = nn.initializers.truncated_normal(stddev=0.02)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """torch `F.normalize(x, dim=-1)`: x / max(‖x‖, eps)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class ProjectionMLP(nn.Module):
    """`nlayers` linears (trunc-normal σ .02, zero bias) with exact GELU between them."""

    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3
    dtype: Any = jnp.float32  # matmul compute dtype; params and the output stay float32

    @nn.compact
    def __call__(self, x):
        widths = [self.hidden_dim] * (max(self.nlayers, 1) - 1) + [self.bottleneck_dim]
        names = ("embed", "mlp")
        for i, width in enumerate(widths):
            x = nn.Dense(
                width,
                kernel_init=nn.with_logical_partitioning(_trunc02, names),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, names[1:]),
                dtype=self.dtype,
                name=f"fc{i + 1}",
            )(x)
            if i < len(widths) - 1:
                x = nn.gelu(x, approximate=False)
            names = names[::-1]  # alternate so that consecutive layers shard compatibly
        return x.astype(jnp.float32)


def _torch_linear_init(key, shape, dtype=jnp.float32):
    """PyTorch nn.Linear default weight init, U(±1/√fan_in), for an (in, out) kernel."""
    bound = 1.0 / np.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class WeightNormLinear(nn.Module):
    """Bias-free linear with torch `weight_norm`: W[:, o] = g_o · V[:, o] / ‖V[:, o]‖.

    g is initialised to 1; with ``norm_last_layer`` it is frozen at 1 (DINO), so it is not a
    parameter at all. g has shape (1, out) so that, like the reference's (out, 1), it is
    weight-decayed when trained.
    """

    features: int
    norm_last_layer: bool = True

    @nn.compact
    def __call__(self, x):
        v = self.param(
            "kernel",
            nn.with_logical_partitioning(_torch_linear_init, ("embed", "vocab")),
            (x.shape[-1], self.features),
        )
        w = v / jnp.linalg.norm(v, axis=0, keepdims=True)
        if not self.norm_last_layer:
            w = w * self.param(
                "g", nn.with_logical_partitioning(nn.initializers.ones, (None, "vocab")), (1, self.features)
            )
        return x @ w


class DINOHead(nn.Module):
    """DINO head: MLP → L2-normalise → weight-normalised last layer (croc.md §6).

    With ``dense_dim`` > 0 it is CrOC's / CrIBo's head: a second weight-normalised last layer
    ``last_layer_c`` (``dense_dim`` outputs) shares the MLP. Calling the module gives the
    global (``last_layer``) logits; ``apply(..., method="dense")`` the dense ones. Both last
    layers are created at init and carry the ``last_layer`` prefix, so the default optimizer
    groups freeze both for the first ``optim.freeze_last_layer`` epochs (croc.md §7).
    """

    out_dim: int
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3
    norm_last_layer: bool = True
    dense_dim: int = 0

    def setup(self):
        self.mlp = ProjectionMLP(self.hidden_dim, self.bottleneck_dim, self.nlayers)
        self.last_layer = WeightNormLinear(self.out_dim, self.norm_last_layer)
        if self.dense_dim:
            self.last_layer_c = WeightNormLinear(self.dense_dim, self.norm_last_layer)

    def bottleneck(self, x):
        """The shared MLP's L2-normalised output."""
        return l2_normalize(self.mlp(x))

    def __call__(self, x):
        if self.dense_dim and self.is_initializing():
            self.dense(x)  # create the dense last layer's parameters too
        return self.last_layer(self.bottleneck(x))

    def dense(self, x):
        """Logits of the dense (object/centroid) last layer on the shared MLP."""
        return self.last_layer_c(self.bottleneck(x))
