"""Full training-step throughput and MFU of any training config, on synthetic batches.

    PYTHONPATH=. python benchmarks/train_step.py --config=configs/neco_dinov2.py \
        --set model.dtype=bfloat16 --set model.attention_impl=cudnn --out=neco_s14.json
    # CrOC's paper config (ViT-S/16, batch 256, 2 x 224² views), the GPU suite's CrOC entry
    PYTHONPATH=. python benchmarks/train_step.py --config=configs/croc_coco.py \
        --set model.dtype=bfloat16 --out=croc_s16.json

Builds the real sharded train state and jitted step of the config (the trainer's own
`state.create` / `make_step`, data-parallel over all local devices), feeds device-resident
random crops of the config's shapes (no input pipeline: this times the step alone), and
reports the median step time after warm-up, images/s, and model FLOPs utilisation:
analytic matmul + attention FLOPs of the ViTs and heads (fwd ×3 for the student's fwd+bwd,
×1 for the teacher; rematerialisation not counted; CrOC's clustering and centroid heads are
not counted) over the device's dense peak. The clustering's share of a CrOC step is
`benchmarks/croc_parts.py`.
Needs no grain / TFDS, only ml_collections.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import statistics
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dense_jax import methods
from dense_jax.core import sharding as shd
from dense_jax.core.config_files import config_from_file
from dense_jax.models import build
from dense_jax.train import optim
from dense_jax.train import state as state_lib
from dense_jax.train.step import make_step

# Dense peak TFLOP/s per device (no sparsity) by device-kind substring and compute dtype (fp32
# runs: TF32 tensor cores), from NVIDIA's data sheets; the first matching substring wins.
PEAK_TFLOPS = {
    "H100 PCIe": {"bfloat16": 756.5, "float32": 378.0},
    "H100": {"bfloat16": 989.4, "float32": 494.7},  # SXM ("NVIDIA H100 80GB HBM3")
    "H200": {"bfloat16": 989.4, "float32": 494.7},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
}


def peak_tflops(device_kind: str, dtype: str) -> float | None:
    """Dense peak of one device of `device_kind` at `dtype`; None for unknown kinds (CPU)."""
    kind = next((k for k in PEAK_TFLOPS if k in device_kind), None)
    return PEAK_TFLOPS[kind].get(dtype) if kind else None


def load_config(spec: str, overrides: list[str]):
    config = config_from_file(spec)
    for item in overrides:
        key, _, value = item.partition("=")
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        try:
            node[leaf] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            node[leaf] = value
    config.train.steps_per_epoch = 1000  # schedules need it; no dataset is read
    return config


def synthetic_batch(config, key):
    """Random crops with the shapes the pipeline emits, plus NeCo's box records and CrOC's
    patch positions (random points of the original image, ``crops.patch_size`` set)."""
    b, c = config.data.batch_size, config.crops
    k1, k2, k3 = jax.random.split(key, 3)
    batch = {"global": jax.random.normal(k1, (b, c.n_global, c.global_size, c.global_size, 3))}
    if c.get("patch_size"):
        n = (c.global_size // c.patch_size) ** 2
        batch["global_pos"] = c.global_size * jax.random.uniform(k3, (b, c.n_global, n, 2))
    if c.n_local:
        batch["local"] = jax.random.normal(k2, (b, c.n_local, c.local_size, c.local_size, 3))
    if c.get("pair_boxes"):
        n_views = c.n_global + c.n_local
        sizes = [c.global_size] * c.n_global + [c.local_size] * c.n_local
        half = c.global_size / 2
        batch["gc"] = jnp.broadcast_to(jnp.array([0.0, 0.0, half, half]), (b, c.n_global, n_views, 4))
        view_boxes = jnp.array([[0.0, 0.0, s, s] for s in sizes])[:, None, :]
        batch["all"] = jnp.broadcast_to(view_boxes, (b, n_views, c.n_global, 4))
    return batch


def vit_forward_flops(tokens: int, dim: int, depth: int, patch: int) -> float:
    """Matmul FLOPs of one image through the ViT: qkv/proj/MLP (24·T·D²) + attention
    (4·T²·D) per block, plus the patch embedding."""
    return depth * (24 * tokens * dim**2 + 4 * tokens**2 * dim) + 2 * tokens * 3 * patch**2 * dim


def model_flops(config, vit) -> float:
    """Per-step model FLOPs (student fwd+bwd = 3× fwd on all crops, teacher fwd on globals)."""
    c, p = config.crops, vit.patch_size
    extra = 1 + vit.num_registers

    def per_image(size):
        tokens = (size // p) ** 2
        head = config.get(config.method)
        head_flops = 0.0
        if config.method == "neco":  # the projection MLP runs on every patch token
            h, o = head.hidden_dim, head.out_dim
            head_flops = 2 * tokens * (vit.embed_dim * h + h * h + h * o)
        return vit_forward_flops(tokens + extra, vit.embed_dim, vit.depth, p) + head_flops

    student = c.n_global * per_image(c.global_size) + c.n_local * per_image(c.local_size)
    teacher = c.n_global * per_image(c.global_size)
    return config.data.batch_size * (3 * student + teacher)


@dataclasses.dataclass
class StepSetup:
    """The trainer's jitted step of a config with everything it is called on: ``init()`` makes
    the sharded state; ``batch`` and ``rng`` are device-resident; ``mesh`` / ``rules`` are the
    contexts to trace it in."""

    config: Any
    method: Any
    mesh: Any
    rules: Any
    tx: Any
    init: Any
    shardings: Any
    step: Any
    batch: dict
    rng: jax.Array

    def context(self):
        """The mesh and logical-axis-rules contexts the step traces under."""
        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(nn.logical_axis_rules(self.rules))
        return stack

    def lower(self):
        """The step lowered on abstract state (nothing allocated): ``.compile()`` it."""
        with self.context():
            abstract = state_lib.abstract_state(self.init, self.shardings)
            return self.step.lower(abstract, self.batch, self.rng)


def setup_step(config) -> StepSetup:
    """`StepSetup` of the trainer's own `state.create` / `make_step` for `config`."""
    method = methods.get(config.method)
    mesh, rules = shd.make_mesh(config.mesh.shape), shd.logical_rules(config.mesh.fsdp)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        key_init, key_steps, key_data = jax.random.split(jax.random.key(0), 3)
        abstract = jax.eval_shape(lambda k: nn.unbox(state_lib.init_params(config, method, k)), key_init)
        tx = optim.build(config, getattr(method, "param_groups", build.param_groups)(abstract))
        init, shardings = state_lib.create(config, method, tx, mesh, rules, key_init)
        step = make_step(config, method, tx, shardings, mesh)
        batch = jax.device_put(synthetic_batch(config, key_data), shd.batch_sharding(mesh))
        rng = jax.device_put(key_steps, shd.replicated(mesh))
    return StepSetup(config, method, mesh, rules, tx, init, shardings, step, batch, rng)


def run_steps(setup: StepSetup, step_fn, n_steps: int):
    """(first-call seconds, per-step seconds, last metrics) of `step_fn` (the jitted step or its
    compiled executable) from a fresh state: the first call, then `n_steps` timed calls."""
    with setup.context():
        state = setup.init()
        start = time.perf_counter()
        state, metrics = step_fn(state, setup.batch, setup.rng)
        jax.block_until_ready(metrics)
        first_s = time.perf_counter() - start
        times = []
        for _ in range(n_steps):
            start = time.perf_counter()
            state, metrics = step_fn(state, setup.batch, setup.rng)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
    return first_s, times, metrics


def time_steps(config, n_steps: int):
    """(compile seconds, per-step seconds, last metrics) of the config's jitted train step on
    one synthetic batch: the first call (compile + run), then `n_steps` timed calls."""
    setup = setup_step(config)
    return run_steps(setup, setup.step, n_steps)


def emit(record: dict, out: str) -> None:
    """Print `record` as one JSON line and, when `out` is set, write it there indented."""
    print(json.dumps(record))
    if out:
        with open(out, "w") as f:
            json.dump(record, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], help="key.path=value override")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    config = load_config(args.config, args.set)
    config.mesh.shape = (-1, 1)
    compile_s, times, metrics = time_steps(config, args.steps)

    vit = build.backbone(config.model)
    step_s = statistics.median(times)
    flops = model_flops(config, vit)
    device = jax.devices()[0]
    peak = peak_tflops(device.device_kind, config.model.dtype)
    record = {
        "config": args.config,
        "overrides": args.set,
        "device": device.device_kind,
        "n_devices": jax.device_count(),
        "batch": config.data.batch_size,
        "crops": f"{config.crops.n_global}x{config.crops.global_size} + "
        f"{config.crops.n_local}x{config.crops.local_size}",
        "compile_s": round(compile_s, 1),
        "step_ms": round(step_s * 1e3, 1),
        "step_ms_min_max": [round(min(times) * 1e3, 1), round(max(times) * 1e3, 1)],
        "img_per_s": round(config.data.batch_size / step_s, 1),
        "model_tflop_per_step": round(flops / 1e12, 2),
        "achieved_tflops": round(flops / step_s / 1e12, 1),
        "mfu": round(flops / step_s / 1e12 / peak / jax.device_count(), 3) if peak else None,
        "peak_tflops_assumed": peak,
        "loss": float(metrics["loss"]),
    }
    emit(record, args.out)


if __name__ == "__main__":
    main()
