"""The trainer's optimizer as an optax transformation: DINO's AdamW (croc.md §7, cribo.md §7,
neco.md §2) by default, torch-style SGD or Adam for supervised probes (evaluation.md §2).

Per step, in this order (the reference's `clip_gradients`, `cancel_gradients_last_layer`,
`optimizer.step`):

1. per-tensor clipping: g ← g·c/(‖g‖+1e-6) where that factor is < 1 (c = clip_grad > 0);
2. per parameter group (labels from the method's `param_groups`): Adam moments with the
   group's own step count, decoupled weight decay on tensors with ndim ≥ 2 that are not
   biases (DINO `get_params_groups`), learning rate × the group's `lr_scale`;
3. while `freeze` is true the "last_layer" group gets a zero update and its optimizer state
   (moments and count) is left untouched, as torch's AdamW does for a parameter whose grad
   was cancelled.

``optim.name="sgd"`` / ``"adam"`` replace step 2 by torch's SGD (momentum ``sgd_momentum``) or
Adam with *coupled* weight decay on every tensor (g ← g + wd·p before the moments, as
``torch.optim.SGD/Adam(weight_decay=wd)`` over one parameter group, biases included: the
linear probes of evaluation.md §2a/§2b: SGD for the Leopart/NeCo probe, Adam for CrOC's).

The step-dependent values (lr, wd, freeze) are extra arguments of `update`, computed from
`state.step` in the train step: ``tx.update(g, s, p, lr=..., wd=..., freeze=...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import optax

if TYPE_CHECKING:  # configs are ml_collections files; the step runs without the package
    import ml_collections as mlc

FROZEN_GROUP = "last_layer"


def _is_decayed(path, leaf) -> bool:
    name = getattr(path[-1], "key", None)
    return leaf.ndim >= 2 and name != "bias"


def clip_per_tensor(max_norm: float) -> optax.GradientTransformation:
    """DINO `clip_gradients`: each tensor rescaled by clip/(norm + 1e-6) when that is < 1."""

    def update(updates, state, params=None):
        def clip(g):
            coef = max_norm / (jnp.linalg.norm(g.ravel()) + 1e-6)
            return jnp.where(coef < 1.0, g * coef, g)

        return jax.tree.map(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _decay_and_lr(lr_scale: float) -> optax.GradientTransformationExtraArgs:
    """u ← −lr·lr_scale·(u + wd·p) with wd only on decayed tensors (decoupled AdamW)."""

    def update(updates, state, params=None, *, lr, wd, **_):
        def one(path, u, p):
            if _is_decayed(path, p):
                u = u + wd * p
            return -lr * lr_scale * u

        return jax.tree_util.tree_map_with_path(one, updates, params), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


def _coupled_decay() -> optax.GradientTransformationExtraArgs:
    """g ← g + wd·p on every tensor (torch SGD/Adam ``weight_decay``)."""

    def update(updates, state, params=None, *, wd, **_):
        return jax.tree.map(lambda u, p: u + wd * p, updates, params), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


def _scale_by_lr(lr_scale: float) -> optax.GradientTransformationExtraArgs:
    """u ← −lr·lr_scale·u."""

    def update(updates, state, params=None, *, lr, **_):
        return jax.tree.map(lambda u: -lr * lr_scale * u, updates), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


def _group_transform(o: mlc.ConfigDict, lr_scale: float) -> optax.GradientTransformation:
    """One parameter group's update rule under ``optim.name``."""
    if o.name == "adamw":
        return optax.chain(optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps), _decay_and_lr(lr_scale))
    if o.name == "sgd":
        return optax.chain(_coupled_decay(), optax.trace(decay=o.sgd_momentum), _scale_by_lr(lr_scale))
    if o.name == "adam":
        return optax.chain(
            _coupled_decay(), optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps), _scale_by_lr(lr_scale)
        )
    raise ValueError(f"unknown optim.name {o.name!r}; use adamw, sgd or adam")


def _freezable(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """`inner`, except that while `freeze` is true updates are 0 and the state is kept."""
    inner = optax.with_extra_args_support(inner)

    def update(updates, state, params=None, *, freeze, **extra):
        new_updates, new_state = inner.update(updates, state, params, freeze=freeze, **extra)
        new_updates = jax.tree.map(lambda u: jnp.where(freeze, jnp.zeros_like(u), u), new_updates)
        new_state = jax.tree.map(lambda old, new: jnp.where(freeze, old, new), state, new_state)
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(inner.init, update)


def build(config: mlc.ConfigDict, labels: Any) -> optax.GradientTransformationExtraArgs:
    """The optimizer for params labelled by `labels` (same tree, group names as leaves)."""
    o = config.optim
    groups = sorted(set(jax.tree.leaves(labels)))
    missing = [g for g in groups if g not in o.lr_scale]
    if missing:
        raise ValueError(f"config.optim.lr_scale has no entry for parameter groups {missing}")
    transforms = {}
    for group in groups:
        tx = _group_transform(o, o.lr_scale[group])
        transforms[group] = _freezable(tx) if group == FROZEN_GROUP else tx
    parts = [optax.partition(transforms, labels)]
    if o.clip_grad > 0:
        parts.insert(0, clip_per_tensor(o.clip_grad))
    return optax.chain(*parts)
