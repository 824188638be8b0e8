"""DINO (croc.md §6 "Global loss", "Centering", "Temperatures"; cribo.md §6).

The teacher sees the n_g global crops, the student every crop (globals, then locals). With
s_v = student logits of view v / τ_s and t_i = softmax((teacher logits of global i − center)
/ τ_t(epoch)), the loss is the mean over the pairs (i, v ≠ i) of
CE(t_i, s_v) = mean over the batch of −Σ t_i·log_softmax(s_v): DINO's ``DINOLoss`` (for two
globals and no locals, ½[CE(t_1, s_2) + CE(t_2, s_1)]). The center is then updated with the
old value used in the loss: center ← m·center + (1 − m)·mean of the raw teacher logits over
all global views of the global batch (m = 0.9). τ_t warms up linearly per epoch.

``dino.centering="sinkhorn_knopp"`` replaces the softmax-minus-center teacher targets by
DINOv2's Sinkhorn-Knopp normalisation (``sinkhorn_knopp_targets``): an equipartition over the
global batch, which keeps a small-batch run from collapsing to the uniform output. The
center is still tracked (unused) so the train state has one layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dense_jax.core.schedules import Schedules, per_epoch_linear
from dense_jax.models.build import backbone
from dense_jax.models.heads import DINOHead

if TYPE_CHECKING:  # configs are ml_collections files; the step runs without the package
    import ml_collections as mlc


def heads(config: mlc.ConfigDict) -> DINOHead:
    d = config.dino
    return DINOHead(d.out_dim, d.hidden_dim, d.bottleneck_dim, d.nlayers, d.norm_last_layer)


def init_aux(config: mlc.ConfigDict, rng: jax.Array) -> dict:
    del rng
    return {"center": jnp.zeros((1, config.dino.out_dim), jnp.float32)}


def teacher_temp(config: mlc.ConfigDict, step) -> jax.Array:
    d = config.dino
    return per_epoch_linear(
        Schedules(config).epoch(step), d.warmup_teacher_temp, d.teacher_temp, d.warmup_teacher_temp_epochs
    )


def view_major(crops: jax.Array) -> jax.Array:
    """(B, n, H, W, C) → (n·B, H, W, C), view 0 of every image first (MultiCropWrapper order).

    The merged axis is constrained to the "batch" sharding (a no-op without the trainer's
    logical rules): a batch-sharded input cannot stay sharded through the view-major reshape,
    and without the constraint XLA all-gathers the crops and every device computes the whole
    global batch (tests/train/test_data_parallel.py)."""
    merged = jnp.swapaxes(crops, 0, 1).reshape((-1,) + crops.shape[2:])
    return nn.with_logical_constraint(merged, ("batch",) + (None,) * (merged.ndim - 1))


def cross_view_ce(teacher_probs: jax.Array, student_logprobs: jax.Array) -> jax.Array:
    """Mean over pairs (i < n_g, v ≠ i) of batch-mean CE(t_i, s_v).

    teacher_probs (n_g, B, K), student_logprobs (n_v, B, K), views in the same order.
    """
    n_g, batch, _ = teacher_probs.shape
    n_v = student_logprobs.shape[0]
    ce = (
        -jnp.einsum("ibk,vbk->iv", teacher_probs, student_logprobs, precision=jax.lax.Precision.HIGHEST)
        / batch
    )
    pairs = 1.0 - jnp.eye(n_g, n_v)
    return (ce * pairs).sum() / pairs.sum()


def sinkhorn_knopp_targets(teacher_logits, teacher_temp, n_iter: int = 3) -> jax.Array:
    """DINOv2's teacher targets: exp(logits / τ_t) alternately normalised so that every
    prototype gets mass 1/K and every sample 1/N over the N rows (the global batch), ending
    on the samples; returned as per-sample distributions (rows sum to 1)."""
    n, k = teacher_logits.shape
    q = jnp.exp((teacher_logits - teacher_logits.max()) / teacher_temp)
    q = q / q.sum()
    for _ in range(n_iter):
        q = q / (k * q.sum(axis=0, keepdims=True))
        q = q / (n * q.sum(axis=1, keepdims=True))
    return q * n


def teacher_targets(teacher_logits, center, teacher_temp, centering: str) -> jax.Array:
    """Per-sample teacher distributions (n_g·B, K) under ``dino.centering``."""
    if centering == "center":
        return jax.nn.softmax((teacher_logits - center) / teacher_temp, axis=-1)
    if centering == "sinkhorn_knopp":
        return sinkhorn_knopp_targets(teacher_logits, teacher_temp)
    raise ValueError(f"unknown dino.centering {centering!r}; use center or sinkhorn_knopp")


def dino_loss(
    student_logits,
    teacher_logits,
    center,
    teacher_temp,
    student_temp: float,
    n_global: int,
    centering: str = "center",
) -> jax.Array:
    """DINOLoss on view-major logits: student (n_v·B, K), teacher (n_g·B, K), center (1, K)."""
    probs = teacher_targets(teacher_logits, center, teacher_temp, centering)
    logprobs = jax.nn.log_softmax(student_logits / student_temp, axis=-1)
    k = probs.shape[-1]
    return cross_view_ce(probs.reshape(n_global, -1, k), logprobs.reshape(-1, probs.shape[0] // n_global, k))


def update_center(center, teacher_logits, momentum: float, weights=None) -> jax.Array:
    """center ← m·center + (1 − m)·mean of the teacher logits (N, K) over the global batch.

    `weights` (N,), optional: a 0/1 row mask (CrOC's valid centroids, croc.md §6 "Centering");
    the mean is then Σ w·logits / max(Σ w, 1), so masked rows count for nothing."""
    if weights is None:
        mean = teacher_logits.mean(axis=0, keepdims=True)
    else:
        weights = weights.astype(teacher_logits.dtype)
        total = jnp.einsum("n,nk->k", weights, teacher_logits, precision=jax.lax.Precision.HIGHEST)
        mean = (total / jnp.maximum(weights.sum(), 1.0))[None]
    return momentum * center + (1.0 - momentum) * mean


def loss(student_params, teacher_params, aux, batch, ctx):
    """DINO loss; see the module docstring. Returns (loss, (metrics, new_aux))."""
    config, rng = ctx.config, ctx.rng
    d = config.dino
    vit, head = backbone(config.model), heads(config)
    n_global = batch["global"].shape[1]
    globals_ = view_major(batch["global"])

    teacher = head.apply(
        {"params": teacher_params["head"]}, vit.apply({"params": teacher_params["backbone"]}, globals_)["cls"]
    )
    teacher = jax.lax.stop_gradient(teacher)

    def student_cls(crops, key):
        return vit.apply(
            {"params": student_params["backbone"]}, view_major(crops), train=True, rngs={"dropout": key}
        )["cls"]

    key_global, key_local = jax.random.split(rng)
    features = [student_cls(batch["global"], key_global)]
    if "local" in batch:
        features.append(student_cls(batch["local"], key_local))
    student = head.apply({"params": student_params["head"]}, jnp.concatenate(features))

    temp = teacher_temp(config, ctx.step)
    value = dino_loss(student, teacher, aux["center"], temp, d.student_temp, n_global, d.centering)
    center = update_center(aux["center"], teacher, d.center_momentum)
    return value, ({"teacher_temp": temp}, {"center": center})
