"""Orbax checkpoints: train state + grain iterator state + config JSON (jax-practices §7).

One checkpoint = ``state`` (StandardSave of the whole `TrainState`), ``data`` (this host's
grain iterator position) and ``meta`` (step, the resolved config and the state's
fingerprint, `dense_jax.train.integrity`). Saves are async by default and the last
``ckpt.keep`` are kept. A checkpoint is only ever used after its files and fingerprint check
out: damaged steps are skipped for the newest intact one (`Checkpointer` states the rules).
Where a run's first state comes from (own checkpoint, ``resume``, ``init_from``) is
`dense_jax.train.restore`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any, Callable

import grain
import jax
import ml_collections as mlc
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from dense_jax.train import integrity
from dense_jax.train.state import TrainState

TRASH = "trash"  # old steps are renamed into it, then deleted (`Checkpointer`)
KILLED_SAVE = ".orbax-checkpoint-tmp"  # in the name of a step whose save never committed


def _state_handler() -> ocp.PyTreeCheckpointHandler:
    """PyTree handler for the state's jax.Arrays without replica-parallel saving.

    Replica-parallel writes slice every replicated array per replica with eagerly
    dispatched ops; on CPU their compiles dominate (smoke state: 16 s → 1.8 s per save).
    The state of our models is small enough for the primary replica to write alone.
    """
    registry = ocp.type_handlers.create_type_handler_registry(
        (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False))
    )
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (e.g. the disk is full); the earlier ones are intact."""


class NoUsableCheckpointError(RuntimeError):
    """The checkpoint directory holds steps, but none of them restores intact."""


class DamagedCheckpointError(Exception):
    """One step cannot be restored. ``tag`` (``missing``, ``unreadable``, ``checksum``) names
    the kind of damage in the name the step is kept aside under; ``detail`` says what."""

    def __init__(self, tag: str, detail: str):
        super().__init__(f"{tag}: {detail}")
        self.tag, self.detail = tag, detail


def _unreadable(err: Exception, limit: int = 200) -> DamagedCheckpointError:
    """The damage an orbax/tensorstore error shows (its first line).

    Orbax abandons a failed restore while other tensorstore reads are still in flight; each of
    those later calls back into orbax's closed event loop and Python prints an "Event loop is
    closed" traceback for it. Those (and only those) are silenced from then on: the damage has
    been reported in one line."""
    if not getattr(sys.unraisablehook, "silences_closed_loop", False):
        previous = sys.unraisablehook

        def hook(unraisable):
            late = isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(
                unraisable.exc_value
            )
            if not late:
                previous(unraisable)

        hook.silences_closed_loop = True
        sys.unraisablehook = hook
    text = (str(err).strip().splitlines() or [""])[0].split(" [tensorstore_spec")[0]
    if len(text) > limit:  # tensorstore nests its causes: the innermost one comes last
        text = "…" + text[-limit:]
    return DamagedCheckpointError("unreadable", f"{type(err).__name__}: {text}")


def _all_hosts(ok: bool) -> bool:
    """Whether `ok` holds on every host: all hosts take the same fallback decisions."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


class Checkpointer:
    """A CheckpointManager over ``directory`` with this project's item layout and rules:

    - each save records the fingerprint of the state (`integrity`) and the host-0 data
      position in ``meta``; a restore checks both, and the files the step needs;
    - `newest_good` restores the newest intact step: damaged newer steps are named in one
      line each and renamed ``<step>.damaged-<tag>`` (kept, never deleted; left in place in a
      read-only directory); when steps exist but none is intact it raises
      `NoUsableCheckpointError` and renames nothing, so that a rerun fails the same way
      instead of silently starting over;
    - old steps are removed by an atomic rename into ``trash/`` and then deleted, so a kill
      during the cleanup never leaves a half-deleted step in the listing; killed saves
      (``*.orbax-checkpoint-tmp*``) are removed when the directory is opened, before it
      returns (orbax's own removal runs in a thread that ``close`` does not join, and a CLI
      that exits with an error while it runs prints a traceback at interpreter shutdown);
    - an OSError while writing (full disk) becomes `CheckpointSaveError`, which names the last
      complete step (orbax deletes old steps only after a save has committed).
    """

    def __init__(self, directory: str, config: mlc.ConfigDict | None = None, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        self.read_only = read_only
        self._in_flight: int | None = None
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={
                "state": _state_handler(),
                "data": grain.checkpoint.CheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
            options=ocp.CheckpointManagerOptions(
                max_to_keep=None if config is None else config.ckpt.keep,
                enable_async_checkpointing=config is not None and config.ckpt.async_save,
                read_only=read_only,
                create=not read_only,
                cleanup_tmp_directories=False,  # `_remove_killed_saves`
                todelete_subdir=None if read_only else TRASH,
            ),
        )
        self._remove_killed_saves()
        self._empty_trash()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    @property
    def _cleans(self) -> bool:
        """Whether this process removes leftovers: process 0 of a writable directory."""
        return not self.read_only and jax.process_index() == 0

    def _empty_trash(self) -> None:
        trash = os.path.join(self.directory, TRASH)
        if not self._cleans or not os.path.isdir(trash):
            return
        for name in os.listdir(trash):
            shutil.rmtree(os.path.join(trash, name), ignore_errors=True)

    def _remove_killed_saves(self) -> None:
        if not self._cleans:
            return
        for name in os.listdir(self.directory):
            if KILLED_SAVE in name:
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def _save_error(self, err: OSError) -> CheckpointSaveError:
        self.manager.reload()
        last = self.manager.latest_step()
        kept = "no checkpoint is complete yet" if last is None else f"the last complete one is step {last}"
        return CheckpointSaveError(
            f"could not write checkpoint step {self._in_flight} in {self.directory} ({err}); {kept}, "
            "and a rerun resumes from it once the cause (e.g. a full disk) is fixed"
        )

    def save(self, step: int, state: TrainState, data_iter, config: mlc.ConfigDict) -> None:
        """Write `step` (in the background when ``ckpt.async_save``); an earlier async save's
        failure is raised here."""
        self.wait()
        meta = {
            "step": step,
            "config": config.to_dict(),
            "fingerprint": integrity.fingerprint(state),
            "data": data_iter.get_state(),
        }
        self._in_flight = step
        try:
            self.manager.save(
                step,
                force=True,
                args=ocp.args.Composite(
                    state=ocp.args.PyTreeSave(state),
                    data=grain.checkpoint.CheckpointSave(data_iter),
                    meta=ocp.args.JsonSave(meta),
                ),
            )
        except OSError as err:
            raise self._save_error(err) from err
        self._empty_trash()

    def wait(self) -> None:
        """Wait for the save in flight; its failure raises `CheckpointSaveError`."""
        try:
            self.manager.wait_until_finished()
        except OSError as err:
            raise self._save_error(err) from err
        self._empty_trash()

    def meta(self, step: int) -> dict:
        """The ``meta`` item of `step` (step, config, fingerprint, data position)."""
        try:
            return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as err:  # any failure to read a damaged step: orbax/tensorstore raise many kinds
            raise _unreadable(err) from err

    def restore(self, step: int, target, data_iter=None, partial: bool = False):
        """The state at `step` placed like `target` (a tree of ShapeDtypeStructs; with
        `partial`, a subtree of the state's, e.g. ``{"teacher": {"backbone": ...}}``), after
        checking its files and fingerprint; `data_iter`, if given, is repositioned in place.
        Raises `DamagedCheckpointError` when the step cannot be restored intact."""
        problem = integrity.layout_problem(os.path.join(self.directory, str(step)), jax.process_count())
        if problem:
            raise DamagedCheckpointError("missing", problem)
        meta = self.meta(step)
        items = {
            "state": ocp.args.PyTreeRestore(
                target,
                restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=partial,
            )
        }
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        try:
            state = self.manager.restore(step, args=ocp.args.Composite(**items))["state"]
        except Exception as err:  # see `meta`
            raise _unreadable(err) from err
        bad = integrity.mismatches(meta["fingerprint"], state) if "fingerprint" in meta else []
        if bad:
            detail = f"{len(bad)} arrays differ from their fingerprint: {bad[0]}, …"
            raise DamagedCheckpointError("checksum", detail)
        position = None if data_iter is None else json.loads(json.dumps(data_iter.get_state()))
        if jax.process_index() == 0 and "data" in meta and position not in (None, meta["data"]):
            raise DamagedCheckpointError("checksum", f"data position {position} differs from {meta['data']}")
        return state

    def newest_good(self, restore_step: Callable[[int], Any]) -> tuple[Any, int] | None:
        """(``restore_step(s)``, s) for the newest step s that `restore_step` restores without
        `DamagedCheckpointError`; None when there are no steps (see the class rules)."""
        damaged = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                value, error = restore_step(step), None
            except DamagedCheckpointError as err:
                value, error = None, err
            if _all_hosts(error is None):
                self._set_aside(damaged, step)
                return value, step
            damaged.append((step, error or DamagedCheckpointError("unreadable", "another host failed")))
        if damaged:
            listed = "; ".join(f"step {s} {e}" for s, e in damaged)
            raise NoUsableCheckpointError(
                f"no checkpoint in {self.directory} restores intact (steps "
                f"{', '.join(str(s) for s, _ in damaged)}: {listed}); nothing was renamed: move "
                f"{self.directory} away to start over"
            )
        return None

    def _set_aside(self, damaged: list[tuple[int, DamagedCheckpointError]], good: int) -> None:
        """Name each damaged step in one line; rename it ``<step>.damaged-<tag>[-n]``."""
        for step, error in damaged:
            source = os.path.join(self.directory, str(step))
            name = f"{step}.damaged-{error.tag}"
            for n in range(2, 1000):
                if not os.path.exists(os.path.join(self.directory, name)):
                    break
                name = f"{step}.damaged-{error.tag}-{n}"
            kept = "left in place (read-only)" if self.read_only else f"kept aside as {name}"
            if jax.process_index() == 0:
                if not self.read_only:
                    os.rename(source, os.path.join(self.directory, name))
                print(
                    f"checkpoint step {step} in {self.directory} is damaged ({error}); {kept}; "
                    f"restoring step {good}",
                    file=sys.stderr,
                    flush=True,
                )
        if damaged and not self.read_only:
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices("dense_jax checkpoint set aside")
            self.manager.reload()

    def close(self) -> None:
        self.manager.close()
