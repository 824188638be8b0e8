"""The training loop (architecture.md; jax-practices §4, §7, §8).

`train(config, workdir)` builds the mesh, the data pipeline, the method's state and the
jitted step, restores or initialises, then steps under ``jax.transfer_guard("disallow")``:
batches go to the devices explicitly, metrics stay on device and are fetched every
``train.log_every`` steps (and before every checkpoint, so that a saved state always
follows finite losses and gradients). Process 0 writes ``metrics.jsonl`` and shows a tqdm
bar (loss, img/s, ETA); a rerun in the same workdir first appends a restart marker
(``{"step": start, "restart": origin}``), so that the step records repeated after a resume
are explained. SIGTERM saves a checkpoint at the next step and returns cleanly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from types import ModuleType
from typing import Any, Callable, Protocol, Sequence

import flax.linen as nn
import jax
import ml_collections as mlc
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from dense_jax.core import sharding as shd
from dense_jax.core.errors import ConfigError
from dense_jax.core.schedules import Schedules
from dense_jax.data import pipeline, sources
from dense_jax.data.unreadable import UnreadableFiles
from dense_jax.models import build
from dense_jax.train import observe, optim
from dense_jax.train import state as state_lib
from dense_jax.train.checkpoint import Checkpointer
from dense_jax.train.restore import restore_or_init
from dense_jax.train.step import make_step


class PeriodicEval(Protocol):
    """An evaluation during training (`dense_jax.eval.periodic` builds them from
    ``config.evals``): run on the evaluated backbone's params in the training mesh."""

    name: str

    def due(self, step: int, total: int) -> bool: ...

    def run(self, params: Any, step: int, mesh: Mesh) -> dict[str, float]: ...


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became NaN/Inf; the run stops."""


class TooManyUnreadableError(RuntimeError):
    """More distinct images failed to decode than ``data.max_bad_fraction`` allows
    (`dense_jax.data.unreadable`)."""


def resolve_config(config: mlc.ConfigDict, num_examples: int) -> mlc.ConfigDict:
    """A copy with ``train.steps_per_epoch`` filled in from the dataset size."""
    resolved = mlc.ConfigDict(config.to_dict())
    if resolved.train.steps_per_epoch <= 0:
        resolved.train.steps_per_epoch = pipeline.steps_per_epoch(num_examples, config.data.batch_size)
    return resolved


@dataclasses.dataclass
class _Logger:
    """Host-side bookkeeping: pending device metrics, JSONL, progress bar, image counts."""

    workdir: str
    images_per_step: int
    bar: Any
    pending: list = dataclasses.field(default_factory=list)
    read: int = 0
    skipped: int = 0
    timer: tuple[float, int] | None = None  # (time, step) of the last flush
    unreadable: UnreadableFiles = dataclasses.field(init=False)

    def __post_init__(self):
        self.unreadable = UnreadableFiles(UnreadableFiles.path(self.workdir) if self.workdir else None)

    @property
    def writes(self) -> bool:
        return jax.process_index() == 0

    def flush(self, step: int, ckpt: Checkpointer) -> dict | None:
        """Fetch pending metrics (one transfer), check them, log their mean at `step`."""
        if not self.pending:
            return None
        steps, values = zip(*self.pending)
        self.pending = []
        values = jax.device_get(list(values))
        for s, v in zip(steps, values):
            bad = [k for k in ("loss", "grad_norm") if not np.isfinite(v[k])]
            if bad:
                raise NonFiniteLossError(
                    f"non-finite {', '.join(bad)} at step {s} (loss={v['loss']}, "
                    f"grad_norm={v['grad_norm']}); stopping. The last good checkpoint is step "
                    f"{ckpt.latest_step()} in {ckpt.directory}."
                )
        record = {k: float(np.mean([v[k] for v in values])) for k in values[0]}
        record.update(step=step, skipped_images=self.skipped)
        now = time.perf_counter()
        if self.timer is not None:  # the first interval includes compilation: not timed
            record["img_per_s"] = (step - self.timer[1]) * self.images_per_step / (now - self.timer[0])
            record["step_time_s"] = (now - self.timer[0]) / (step - self.timer[1])
        self.timer = (now, step)
        self.write(record)
        self.bar.set_postfix(
            loss=f"{record['loss']:.4f}",
            **({"img/s": f"{record['img_per_s']:.1f}"} if "img_per_s" in record else {}),
        )
        return record

    def write(self, record: dict, name: str = "metrics.jsonl") -> None:
        if self.writes:
            with open(os.path.join(self.workdir, name), "a") as f:
                f.write(json.dumps(record) + "\n")

    def count_images(self, host_batch: dict, source: sources.SkipUnreadable, max_bad_fraction: float) -> None:
        """Count the batch's images and skips; name new unreadable files; stop when too many."""
        self.read += len(host_batch["index"])
        self.skipped += int(host_batch["skipped"].sum())
        new = self.unreadable.add(host_batch, source)
        if new and self.unreadable.too_many(len(source), max_bad_fraction):
            raise TooManyUnreadableError(
                f"{self.unreadable.summary()}: more than data.max_bad_fraction={max_bad_fraction} "
                f"of the {len(source)} images; check the dataset files"
            )


class _Preemption:
    """SIGTERM → stop at the next step boundary.

    Several processes: JAX's preemption service (started by `jax.distributed.initialize`)
    owns SIGTERM and agrees with the other hosts on one step to stop at (orbax's preemption
    sync point); a Python handler here would replace JAX's and no host would ever stop.
    """

    def __init__(self):
        self.requested = False
        self.previous = None if jax.process_count() > 1 else signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def reached(self, ckpt: Checkpointer, step: int) -> bool:
        if jax.process_count() > 1:
            return ckpt.manager.reached_preemption(step)
        return self.requested

    def restore(self):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Everything `train` builds before stepping; also what the tests drive directly."""

    config: mlc.ConfigDict  # resolved
    method: ModuleType
    source: sources.SkipUnreadable
    mesh: Mesh
    tx: Any
    init: Callable[[], state_lib.TrainState]  # fresh sharded state
    shardings: state_lib.TrainState
    step: Callable  # jitted (state, batch, rng) -> (state, metrics)
    rng: jax.Array  # replicated base key of the steps

    def data_iterator(self):
        transform = getattr(self.method, "transform", None)
        return iter(
            pipeline.build(
                self.config,
                self.source,
                jax.process_index(),
                jax.process_count(),
                transform(self.config) if transform else None,
            )
        )

    def evaluated_backbone(self, state: state_lib.TrainState) -> Any:
        """The backbone the evaluations score: the EMA teacher's, else the student's."""
        return (state.teacher if self.config.teacher.ema else state.params)["backbone"]

    def device_batch(self, host_batch: dict) -> dict:
        return shd.to_global(
            {k: v for k, v in host_batch.items() if k not in pipeline.HOST_KEYS},
            shd.batch_sharding(self.mesh),
        )


def mesh_and_rules(config: mlc.ConfigDict):
    """The mesh and logical rules of a config; enter both (`jax.set_mesh`,
    `nn.logical_axis_rules`) around `build_trainer` and the loop (jax-practices §2)."""
    return shd.make_mesh(config.mesh.shape), shd.logical_rules(config.mesh.fsdp)


def build_trainer(
    config: mlc.ConfigDict, method: ModuleType, mesh: Mesh, rules, source: sources.Source | None = None
) -> Trainer:
    """Data source (``config.data``'s unless given), optimizer, sharded state init and jitted
    step of `method` for `config`."""
    source = (
        sources.training_source(config.data)
        if source is None
        else sources.SkipUnreadable(source, config.data.max_consecutive_bad)
    )
    config = resolve_config(config, len(source))
    if config.data.batch_size % mesh.shape["data"]:
        raise ConfigError(
            f"data.batch_size={config.data.batch_size} is not divisible by the "
            f"{mesh.shape['data']} devices of the 'data' mesh axis"
        )
    key_init, key_steps = jax.random.split(jax.random.key(config.seed))
    abstract_params = jax.eval_shape(lambda k: nn.unbox(state_lib.init_params(config, method, k)), key_init)
    tx = optim.build(config, getattr(method, "param_groups", build.param_groups)(abstract_params))
    init, shardings = state_lib.create(config, method, tx, mesh, rules, key_init)
    return Trainer(
        config,
        method,
        source,
        mesh,
        tx,
        init,
        shardings,
        make_step(config, method, tx, shardings, mesh),
        jax.device_put(key_steps, shd.replicated(mesh)),
    )


def train(
    config: mlc.ConfigDict, method: ModuleType, workdir: str, evals: Sequence[PeriodicEval] = ()
) -> state_lib.TrainState:
    """Train `method` under `config` in `workdir` (resuming what is there); returns the final state."""
    mesh, rules = mesh_and_rules(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return run(build_trainer(config, method, mesh, rules), workdir, evals, announce=True)


def fit(
    config: mlc.ConfigDict, method: ModuleType, source: sources.Source, workdir: str, backbone: Any = None
) -> state_lib.TrainState:
    """Train `method` on an in-memory or custom `source` (not ``config.data``'s), optionally
    starting from given `backbone` params (an evaluated model): what the evaluation protocols
    that train (the linear probes) call, handed to them by the CLIs."""
    mesh, rules = mesh_and_rules(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return run(build_trainer(config, method, mesh, rules, source), workdir, backbone=backbone)


def _report_compile(trainer: Trainer, step: int, state, batch: dict, log: _Logger, announce: bool) -> None:
    """Compile the step for the first batch now, log what it costs and, if `announce`, say it."""
    report = observe.compile_step(trainer.step, state, batch, trainer.rng)
    log.write({"step": step, "compiled": report})
    if announce and log.writes:
        tqdm.write(observe.describe(report))


def _evaluate(evals, step: int, total: int, trainer: Trainer, state, log) -> None:
    """Runs the evaluations due at `step` on the evaluated backbone and logs their scores."""
    due = [ev for ev in evals if ev.due(step, total)]
    if due:
        with jax.transfer_guard("allow"):
            for ev in due:
                log.write({"step": step, **ev.run(trainer.evaluated_backbone(state), step, trainer.mesh)})


def run(
    trainer: Trainer,
    workdir: str,
    evals: Sequence[PeriodicEval] = (),
    backbone: Any = None,
    announce: bool = False,
) -> state_lib.TrainState:
    """Restore or initialise in `workdir`, then step to the end (or to a SIGTERM).

    `backbone`: params that replace the fresh init's backbone (when no checkpoint is there).
    The first step is compiled ahead of time and reported in ``metrics.jsonl``
    (``{"step", "compiled"}``, `observe.compile_step`); `announce` also prints its line.
    Call inside the mesh/rules context the trainer was built in. The trainer (and its
    compiled step) can serve several runs.
    """
    config = trainer.config
    os.makedirs(workdir, exist_ok=True)
    with contextlib.ExitStack() as cleanup:  # also when restoring fails: orbax's threads end
        ckpt = Checkpointer(os.path.join(workdir, "ckpt"), config)
        cleanup.callback(ckpt.close)
        cleanup.callback(ckpt.wait)  # an async save's failure is raised here
        data_iter = trainer.data_iterator()
        cleanup.callback(data_iter.close)  # stops grain workers and frees their shared memory
        state, origin = restore_or_init(ckpt, config, trainer.init, trainer.shardings, data_iter, backbone)
        return _steps(trainer, workdir, evals, ckpt, data_iter, state, origin, announce)


def _steps(
    trainer: Trainer, workdir: str, evals, ckpt: Checkpointer, data_iter, state, origin: str, announce: bool
):
    """The step loop of `run` from the restored `state`: logs, checkpoints, evaluations,
    SIGTERM, the profiler window."""
    config = trainer.config

    start = int(jax.device_get(state.step))
    total = Schedules(config).total_steps
    writes = jax.process_index() == 0
    log = _Logger(workdir, config.data.batch_size, None)
    if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
        # A rerun in the same workdir: the steps logged after `start` come again.
        log.write({"step": start, "restart": origin})
    bar = tqdm(
        total=total,
        initial=start,
        unit="step",
        disable=not writes,
        dynamic_ncols=True,
        desc=f"{config.method} ({origin})",
    )
    log.bar = bar
    preemption = _Preemption()
    profile = observe.ProfileWindow(tuple(config.train.profile_steps), os.path.join(workdir, "profile"))
    ids_file = os.path.join(workdir, f"batch_ids.{jax.process_index()}.jsonl")
    try:
        if start == 0:
            _evaluate(evals, 0, total, trainer, state, log)
        with jax.transfer_guard("disallow"):
            for step in range(start, total):
                host_batch = next(data_iter)
                log.count_images(host_batch, trainer.source, config.data.max_bad_fraction)
                if config.train.record_batch_ids:
                    with open(ids_file, "a") as f:
                        f.write(json.dumps({"step": step, "ids": host_batch["index"].tolist()}) + "\n")
                batch = trainer.device_batch(host_batch)
                if step == start:
                    _report_compile(trainer, step, state, batch, log, announce)
                profile.before(step)
                state, metrics = trainer.step(state, batch, trainer.rng)
                done = step + 1
                profile.after(done, state)
                log.pending.append((done, metrics))
                bar.update(1)
                stop = preemption.reached(ckpt, done)
                if done % config.train.log_every == 0 or done == total:
                    log.flush(done, ckpt)
                if stop or done % config.ckpt.every_steps == 0 or done == total:
                    log.flush(done, ckpt)
                    ckpt.save(done, state, data_iter, config)
                _evaluate(evals, done, total, trainer, state, log)
                if stop:
                    if writes:
                        tqdm.write(f"preempted: checkpoint saved at step {done} in {ckpt.directory}")
                    break
    finally:
        profile.close()
        preemption.restore()
        bar.close()
        if writes and log.unreadable.files:
            tqdm.write(log.unreadable.summary())
    return state
