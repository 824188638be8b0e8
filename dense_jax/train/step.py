"""The generic train step (jax-practices §4): pure, jitted with explicit shardings, donated.

``step(state, batch, rng) -> (state, metrics)``:

0. with ``config.data.device_photometric``, the multi-crop views arrive as uint8 with their
   photometric draws and get jitter, grayscale, blur, solarize and normalisation here
   (`dense_jax.data.photometric`), before any method sees them;
1. key = fold_in(rng, state.step) (reproducible on resume, no RNG in the state);
2. loss, grads = value_and_grad(method.loss) w.r.t. the student params only, the method
   getting a `StepContext` (config, mesh, schedules, step, key, model state);
3. optimizer update with lr / wd / freeze from `state.step`: per-iteration lr and weight-decay
   schedules, the head's last layer frozen for the first epochs (croc.md §7);
4. EMA teacher θ_t ← m·θ_t + (1 − m)·θ_s with the updated student (all params, head too),
   when the run has a teacher (``config.teacher.ema``);
5. the method's new aux state and model state replace the old.

Metrics are replicated scalars left on device; the loop fetches them every `log_every` steps.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import jax
import optax
from jax.sharding import Mesh

from dense_jax.core import sharding as shd
from dense_jax.core.context import LossOutput, StepContext
from dense_jax.core.schedules import Schedules
from dense_jax.data import photometric
from dense_jax.train.state import TrainState

if TYPE_CHECKING:  # configs are ml_collections files; the step runs without the package
    import ml_collections as mlc


def apply_gradients(
    config: mlc.ConfigDict,
    tx: optax.GradientTransformationExtraArgs,
    schedules: Schedules,
    state: TrainState,
    grads,
):
    """Steps 3–4 of the module docstring: (params, opt_state, teacher, metrics) after the
    optimizer update at ``state.step`` and the EMA teacher update (the teacher unchanged
    without ``config.teacher.ema``)."""
    step = state.step
    lr, wd = schedules.lr(step), schedules.weight_decay(step)
    updates, opt_state = tx.update(
        grads, state.opt_state, state.params, lr=lr, wd=wd, freeze=schedules.freeze_last_layer(step)
    )
    params = optax.apply_updates(state.params, updates)
    metrics = {"lr": lr, "weight_decay": wd, "grad_norm": optax.tree.norm(grads)}
    teacher = state.teacher
    if config.teacher.ema:
        momentum = schedules.momentum(step)
        teacher = jax.tree.map(lambda t, s: momentum * t + (1.0 - momentum) * s, teacher, params)
        metrics["momentum"] = momentum
    return params, opt_state, teacher, metrics


def batch_preprocessor(config: mlc.ConfigDict):
    """batch -> batch run first inside the step: `photometric.apply_to_batch` with the crop
    recipe's mean/std when ``config.data.device_photometric``, else the identity."""
    if not config.data.device_photometric:
        return lambda batch: batch
    from dense_jax.data.pipeline import crop_spec  # lazy: the host pipeline needs grain

    spec = crop_spec(config)
    return lambda batch: photometric.apply_to_batch(batch, spec.mean, spec.std, spec.jitter[3] > 0)


def make_step(
    config: mlc.ConfigDict,
    method: ModuleType,
    tx: optax.GradientTransformationExtraArgs,
    state_shardings: TrainState,
    mesh: Mesh,
):
    """The jitted step for a resolved config (see `loop.resolve_config`)."""
    schedules = Schedules(config)
    preprocess = batch_preprocessor(config)

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        batch = preprocess(batch)
        step = state.step
        ctx = StepContext(
            config=config,
            mesh=mesh,
            schedules=schedules,
            step=step,
            rng=jax.random.fold_in(rng, step),
            model_state=state.model_state,
        )
        grad_fn = jax.value_and_grad(method.loss, has_aux=True)
        (loss, out), grads = grad_fn(state.params, state.teacher, state.aux, batch, ctx)
        out = LossOutput(*out)
        params, opt_state, teacher, update_metrics = apply_gradients(config, tx, schedules, state, grads)
        metrics = {**out.metrics, "loss": loss, **update_metrics}
        model_state = state.model_state if out.model_state is None else out.model_state
        new_state = state.replace(
            step=step + 1,
            params=params,
            teacher=teacher,
            opt_state=opt_state,
            aux=out.aux,
            model_state=model_state,
        )
        return new_state, metrics

    repl = shd.replicated(mesh)
    return jax.jit(
        train_step,
        in_shardings=(state_shardings, shd.batch_sharding(mesh), repl),
        out_shardings=(state_shardings, repl),
        donate_argnums=(0,),
    )
