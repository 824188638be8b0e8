"""Data parallelism really splits the work: on 8 devices each device computes about 1/8 of the
step's FLOPs (XLA's cost analysis of the partitioned program). Before `dino.view_major`
constrained its merged axis, the multi-crop reshape made XLA gather the crops and every device
computed the whole batch (39.15 vs 39.15 MFLOP per device on 1 and 8 devices, DINO smoke)."""

from __future__ import annotations

import jax

from benchmarks.train_step import load_config, setup_step


def _flops_per_device(spec: str, mesh_shape: tuple[int, int]) -> float:
    config = load_config(spec, [])
    config.mesh.shape = mesh_shape
    setup = setup_step(config)
    with setup.context():
        cost = setup.lower().compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


def test_dino_step_flops_split_over_8_devices():
    assert jax.device_count() == 8
    one = _flops_per_device("configs/dino_coco.py:smoke", (1, 1))
    eight = _flops_per_device("configs/dino_coco.py:smoke", (8, 1))
    assert eight < one / 4, (one, eight)  # 1/8 of the backbones; the small head and loss stay whole
