"""DINO loss, centering and head against their reference definitions (croc.md §6, check 10)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dense_jax.methods import dino
from dense_jax.models.heads import DINOHead


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference_dino_loss(student, teacher, center, temp, n_global, n_crops, student_temp=0.1):
    """DINO's DINOLoss.forward, written out with per-crop chunks and double loops."""
    s = np.split(student / student_temp, n_crops)
    t = np.split(np.exp(_log_softmax((teacher - center) / temp)), n_global)
    total, terms = 0.0, 0
    for iq, q in enumerate(t):
        for v in range(n_crops):
            if v == iq:
                continue
            total += np.sum(-q * _log_softmax(s[v]), axis=-1).mean()
            terms += 1
    return total / terms


def test_dino_loss_matches_reference_with_local_crops():
    rng = np.random.default_rng(0)
    batch, k, n_global, n_crops = 3, 11, 2, 5
    student = rng.normal(size=(n_crops * batch, k)).astype(np.float32)
    teacher = rng.normal(size=(n_global * batch, k)).astype(np.float32)
    center = rng.normal(size=(1, k)).astype(np.float32) * 0.1
    got = dino.dino_loss(student, teacher, center, 0.05, 0.1, n_global)
    np.testing.assert_allclose(
        got, reference_dino_loss(student, teacher, center, 0.05, n_global, n_crops), rtol=1e-5
    )
    new_center = dino.update_center(center, teacher, 0.9)
    np.testing.assert_allclose(new_center, 0.9 * center + 0.1 * teacher.mean(0, keepdims=True), rtol=1e-6)


def test_head_weight_norm_and_frozen_g():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8)), jnp.float32)
    head = DINOHead(out_dim=10, hidden_dim=16, bottleneck_dim=6, nlayers=3, norm_last_layer=True)
    params = nn.unbox(head.init(jax.random.key(0), x))["params"]
    assert set(params["last_layer"]) == {"kernel"}  # g is fixed to 1: not a parameter
    v = params["last_layer"]["kernel"]
    assert np.abs(v).max() <= 1 / np.sqrt(6)  # torch Linear default init U(±1/√fan_in)
    h = x
    for i in (1, 2, 3):
        layer = params["mlp"][f"fc{i}"]
        h = h @ layer["kernel"] + layer["bias"]
        h = jax.nn.gelu(h, approximate=False) if i < 3 else h
    h = h / np.linalg.norm(h, axis=-1, keepdims=True)
    w = v / np.linalg.norm(v, axis=0, keepdims=True)  # unit-norm column per output unit
    np.testing.assert_allclose(head.apply({"params": params}, x), h @ w, rtol=1e-5, atol=1e-6)
    trainable = nn.unbox(DINOHead(10, 16, 6, 3, norm_last_layer=False).init(jax.random.key(0), x))["params"]
    np.testing.assert_array_equal(trainable["last_layer"]["g"], np.ones((1, 10)))


def reference_sinkhorn_knopp(teacher, temp, n_iter=3):
    """DINOv2's SinkhornKnoppTeacher (single process), written out with loops over iterations."""
    q = np.exp(teacher.astype(np.float64) / temp).T  # (K, N)
    k, n = q.shape
    q /= q.sum()
    for _ in range(n_iter):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= n
    return (q * n).T


def test_sinkhorn_knopp_targets_match_dinov2_and_equipartition():
    rng = np.random.default_rng(2)
    teacher = rng.uniform(-1, 1, size=(12, 7)).astype(np.float32)  # cosine-range logits
    got = np.asarray(dino.sinkhorn_knopp_targets(jnp.asarray(teacher), 0.1))
    np.testing.assert_allclose(got, reference_sinkhorn_knopp(teacher, 0.1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)  # per-sample distributions
    many = np.asarray(dino.sinkhorn_knopp_targets(jnp.asarray(teacher), 0.1, n_iter=200))
    np.testing.assert_allclose(many.sum(0), 12 / 7, rtol=1e-4)  # every prototype gets N/K
    student = rng.normal(size=(12, 7)).astype(np.float32)  # 2 views x batch 6, view-major
    loss_sk = dino.dino_loss(student, teacher, None, 0.1, 0.1, 2, "sinkhorn_knopp")
    probs, logprobs = reference_sinkhorn_knopp(teacher, 0.1), _log_softmax(student / 0.1)
    want = 0.5 * (-(probs[:6] * logprobs[6:]).sum(-1).mean() - (probs[6:] * logprobs[:6]).sum(-1).mean())
    np.testing.assert_allclose(loss_sk, want, rtol=1e-5)
