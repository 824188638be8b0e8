"""Helpers of the mesh-parity tests: a config whose steps move the state far beyond the
parity tolerance, and the whole-state comparison."""

import jax
import ml_collections as mlc
import numpy as np

SGD_WITHOUT_WARMUP = dict(
    name="sgd",
    warmup_epochs=0,
    lr=0.01,
    min_lr=0.01,
    scale_lr_by_batch=False,
    weight_decay=0.0,
    weight_decay_end=0.0,
)


def sgd_without_warmup(config: mlc.ConfigDict, lr: float = SGD_WITHOUT_WARMUP["lr"]) -> mlc.ConfigDict:
    """`config` (edited in place) with SGD at a constant large `lr` from step 0.

    The parameters then move far more than the parity tolerance in a few steps. Adam would
    turn the pure rounding noise of gradients that are zero in exact arithmetic (e.g. the
    attention key bias) into ±lr steps whose signs differ between meshes."""
    config.optim.update({**SGD_WITHOUT_WARMUP, "lr": lr, "min_lr": lr})
    return config


def sgd_smoke(get_config, shape=(1, 1), fsdp=False, lr: float = 0.05, **train) -> mlc.ConfigDict:
    """A method's ``:smoke`` config (``get_config("smoke")``) on mesh `shape` (FSDP when `fsdp`)
    under `sgd_without_warmup` at `lr`, with `train` written into ``config.train``. Bind the first
    argument (``functools.partial``) to get a ``make_config(shape, fsdp)`` for `Trainers`."""
    config = get_config("smoke")
    config.mesh.update(dict(shape=shape, fsdp=fsdp))
    config.train.update(train)
    return sgd_without_warmup(config, lr=lr)


def sgd_without_warmup_flags() -> list[str]:
    """The same edit as command-line overrides of the training CLI."""
    return [f"--config.optim.{key}={value}" for key, value in SGD_WITHOUT_WARMUP.items()]


def relative_diff(a, b) -> float:
    """Largest |a − b| / (1 + |b|) over two trees of the same structure (float32 rounding
    differs with the reduction order on another mesh, relative to each value)."""
    diffs = [
        float((np.abs(np.asarray(x, np.float64) - y) / (1.0 + np.abs(y))).max(initial=0.0))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    ]
    return max(diffs)


def moved(after, before) -> float:
    """Largest |after − before| over two trees: how far steps moved them."""
    return max(
        float(np.abs(x - y).max(initial=0.0)) for x, y in zip(jax.tree.leaves(after), jax.tree.leaves(before))
    )
