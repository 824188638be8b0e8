"""Per-iteration schedules in closed form, evaluated from the step counter inside the step.

`cosine` is DINO's `cosine_scheduler` array (croc.md §7) indexed at `step`:
``linspace(start_warmup, base, W)`` for the first W iterations, then
``final + ½(base − final)(1 + cos(π j / L))`` for j = step − W < L = total − W. Steps past
the end keep the array's last value. `per_epoch_linear` is DINO's teacher-temperature array
``concat(linspace(warm, final, E), final ...)[epoch]`` (croc.md §6 "Temperatures").
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

if TYPE_CHECKING:  # configs are ml_collections files; the step runs without the package
    import ml_collections as mlc


def cosine(
    step, base: float, final: float, total_steps: int, warmup_steps: int = 0, start_warmup: float = 0.0
) -> jax.Array:
    """Value of DINO's `cosine_scheduler(base, final, ...)` array at `step`."""
    step = jnp.minimum(jnp.asarray(step, jnp.float32), total_steps - 1)
    warm = start_warmup + (base - start_warmup) * step / max(warmup_steps - 1, 1)
    j = step - warmup_steps
    cos = final + 0.5 * (base - final) * (1.0 + jnp.cos(jnp.pi * j / max(total_steps - warmup_steps, 1)))
    return jnp.where(step < warmup_steps, warm, cos)


def per_epoch_linear(epoch, warm: float, final: float, warmup_epochs: int) -> jax.Array:
    """``linspace(warm, final, warmup_epochs)[epoch]`` during warm-up, then `final`."""
    epoch = jnp.asarray(epoch, jnp.float32)
    ramp = warm + (final - warm) * epoch / max(warmup_epochs - 1, 1)
    return jnp.where(epoch < warmup_epochs, ramp, final)


def step_decay(step, base: float, milestones, gamma: float) -> jax.Array:
    """``base · gamma^(number of milestones ≤ step)`` (torch ``MultiStepLR`` per iteration)."""
    passed = sum((jnp.asarray(step) >= m).astype(jnp.float32) for m in milestones)
    return jnp.asarray(base, jnp.float32) * jnp.asarray(gamma, jnp.float32) ** passed


def poly(step, base: float, final: float, total_steps: int, power: float) -> jax.Array:
    """MMSeg's ``poly`` policy: ``(base − final)·(1 − step/total)^power + final``."""
    progress = jnp.minimum(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 1.0)
    return (base - final) * (1.0 - progress) ** power + final


@dataclasses.dataclass(frozen=True)
class Schedules:
    """The trainer's per-iteration schedules for one run: lr, weight decay, EMA momentum and the
    last-layer freeze (croc.md §7). All methods take a step array.

    Needs a resolved config (`config.train.steps_per_epoch` > 0, see `loop.resolve_config`).
    """

    config: mlc.ConfigDict

    @property
    def steps_per_epoch(self) -> int:
        spe = self.config.train.steps_per_epoch
        if spe <= 0:
            raise ValueError("config.train.steps_per_epoch is not resolved (got %d)" % spe)
        return spe

    @property
    def total_steps(self) -> int:
        """``train.max_steps`` when set (iteration-based recipes), else epochs × steps per epoch."""
        return self.config.train.max_steps or self.config.train.epochs * self.steps_per_epoch

    @property
    def peak_lr(self) -> float:
        """Base lr per 256 images scaled linearly with the global batch (DINO), or absolute."""
        o = self.config.optim
        return o.lr * self.config.data.batch_size / 256.0 if o.scale_lr_by_batch else o.lr

    def epoch(self, step) -> jax.Array:
        return step // self.steps_per_epoch

    def lr(self, step) -> jax.Array:
        """``optim.schedule="cosine"``: DINO's warm-up + cosine; ``"steps"``: the peak lr
        × ``gamma`` per milestone epoch passed (torch ``MultiStepLR``, evaluation.md §2a);
        ``"poly"``: MMSeg's iteration-wise polynomial decay to ``min_lr`` (§2c)."""
        o = self.config.optim
        if o.schedule == "steps":
            return step_decay(step, self.peak_lr, [m * self.steps_per_epoch for m in o.milestones], o.gamma)
        if o.schedule == "poly":
            return poly(step, self.peak_lr, o.min_lr, self.total_steps, o.power)
        if o.schedule != "cosine":
            raise ValueError(f"unknown optim.schedule {o.schedule!r}; use cosine, steps or poly")
        return cosine(step, self.peak_lr, o.min_lr, self.total_steps, o.warmup_epochs * self.steps_per_epoch)

    def weight_decay(self, step) -> jax.Array:
        o = self.config.optim
        return cosine(step, o.weight_decay, o.weight_decay_end, self.total_steps)

    def momentum(self, step) -> jax.Array:
        t = self.config.teacher
        return cosine(step, t.momentum, t.momentum_end, self.total_steps)

    def freeze_last_layer(self, step) -> jax.Array:
        return self.epoch(step) < self.config.optim.freeze_last_layer
