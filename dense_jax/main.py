"""Training CLI.

    python -m dense_jax.main --config=configs/dino_coco.py:demo --workdir=workdirs/demo
    python -m dense_jax.main --config=configs/dino_coco.py --workdir=DIR --config.data.root=/data/coco
    python -m dense_jax.main --config=configs/comus_voc.py:demo --workdir=workdirs/comus_demo

Re-running the same command resumes from DIR's latest checkpoint (a staged pipeline such as
COMUS resumes at its first missing stage). ``--config.multihost``
initialises `jax.distributed` (TPU pods, SLURM, ``DENSE_JAX_*`` variables:
`dense_jax.core.distributed`, launch/README.md) here, never at import.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file[:variant].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax/jax INFO lines would break the progress bar
    from dense_jax.core import distributed, errors

    config = _CONFIG.value
    if config.multihost:
        try:
            distributed.initialize()
        except errors.ConfigError as err:
            sys.exit(errors.one_line(err))
    from dense_jax.methods import MethodConfigError, UnknownMethodError
    from dense_jax.train import checkpoint, loop

    try:
        train(config, _WORKDIR.value)
    except (
        *errors.REPORTED,
        UnknownMethodError,
        MethodConfigError,
        loop.NonFiniteLossError,
        loop.TooManyUnreadableError,
        checkpoint.CheckpointSaveError,
        checkpoint.NoUsableCheckpointError,
    ) as err:  # one clear line, no traceback
        sys.exit(errors.one_line(err))


def train(config, workdir: str) -> None:
    """Train (or resume) ``config`` in ``workdir`` with its periodic evaluations, then print
    their before/after table: what the CLI runs, callable from Python (the notebooks). A staged
    pipeline (COMUS, ``methods.PIPELINES``) drives the trainer itself."""
    from dense_jax import methods
    from dense_jax.eval import periodic
    from dense_jax.train import loop

    if config.method in methods.PIPELINES:
        methods.pipeline(config.method).run(config, workdir, fit=loop.fit)
        return
    evals = periodic.from_config(config, workdir, fit=loop.fit)
    loop.train(config, methods.get(config.method), workdir, evals=evals)
    _report_evaluations(workdir)


def _report_evaluations(workdir: str) -> None:
    """Prints the evaluations' before/after table and where their PNGs are (``config.evals``)."""
    import os

    import jax

    from dense_jax.eval import periodic

    metrics = os.path.join(workdir, "metrics.jsonl")
    table = periodic.before_after(metrics) if os.path.exists(metrics) else ""
    if table and jax.process_index() == 0:
        print(f"\nevaluations (x100), {metrics}:\n{table}")
        print(f"PNGs: {os.path.join(workdir, 'eval', '<name>', 'step_<n>')}")


def run() -> None:
    """Console entry point (``dense-jax-train``)."""
    from dense_jax.core import errors

    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=errors.parse_flags)


if __name__ == "__main__":
    run()
