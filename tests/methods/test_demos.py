"""The CPU demos on the built-in scenes: the shipped scenes backbone, and what the DINO and
NeCo ``:demo`` runs change under the ``:demo`` protocols (issue 12; numbers in
benchmarks/scenes_learnability.md and benchmarks/scenes.md)."""

import importlib
import os

import numpy as np
import pytest

from configs.dino_coco import get_config as dino_config
from configs.eval import base
from configs.neco_dinov2 import get_config as neco_config
from dense_jax import methods, models
from dense_jax.data.scenes import ScenesConfig, render_scene
from dense_jax.eval import backbones, periodic
from dense_jax.eval.features import eval_item
from dense_jax.eval.protocols import run_protocols
from dense_jax.train import loop, restore

# protocol config -> summary score of the README's before/after table
SCORES = {"linear_voc": "miou", "kmeans_voc": "k9", "hbird_voc": "full_reference"}


def _scene_batch(count=4, size=128):
    items = [
        eval_item(render_scene(i, "val", ScenesConfig(image_size=(size, size))), size, 8)
        for i in range(count)
    ]
    return np.stack([i["image"] for i in items])


@pytest.mark.parametrize("path", [models.SCENES_BACKBONE, models.SCENES_BACKBONE_LONG])
def test_shipped_scenes_backbone_loads_and_is_not_random(path):
    """The package's scenes backbones (float16, official layout, <= 8 MB each) load through
    `dense_jax.models.load` and give patch features far from a random init's."""
    assert os.path.getsize(path) <= 8 * 2**20
    model, params = models.load("vit_demo16", path)
    _, random_params = models.load("vit_demo16", None, seed=0)
    images = _scene_batch()
    shipped = np.asarray(model.apply({"params": params}, images)["patch"])
    random = np.asarray(model.apply({"params": random_params}, images)["patch"])
    assert shipped.shape == random.shape == (4, 8, 8, 192) and np.isfinite(shipped).all()
    change = np.linalg.norm(shipped - random) / np.linalg.norm(random)
    print(f"relative difference of patch features, shipped vs random init: {change:.2f}")
    assert change > 0.5


def _scores(backbone_fn, params):
    """{protocol: score x100} of the `:demo` protocols on `params`."""
    out = {}
    for protocol, score in SCORES.items():
        config = importlib.import_module(f"configs.eval.{protocol}").get_config("demo")
        result = run_protocols(backbone_fn, params, config, fit=loop.fit)
        out[protocol] = 100 * next(iter(result.values()))["summary"][score]
    return out


@pytest.mark.slow
def test_dino_demo_teacher_against_random_init(tmp_path):
    """`configs/dino_coco.py:demo` (512 steps): its teacher beats a random init on the linear
    probe by >= 3 points (measured +4.8 to +5.8). The issue's >= 10 on all three protocols is
    not reached: Hummingbird falls ~10 points (scenes_learnability.md), pinned below."""
    loop.train(dino_config("demo"), methods.get("dino"), str(tmp_path))
    eval_config = base.make("linear", "voc", "demo")
    backbone_fn, trained, _, _ = backbones.from_run(str(tmp_path), eval_config, restore.teacher_backbone)
    _, random_params = models.load("vit_demo16", None, seed=0)
    trained_scores, random_scores = _scores(backbone_fn, trained), _scores(backbone_fn, random_params)
    print({k: (round(random_scores[k], 2), round(trained_scores[k], 2)) for k in SCORES})
    assert trained_scores["linear_voc"] > random_scores["linear_voc"] + 3.0
    assert trained_scores["hbird_voc"] < random_scores["hbird_voc"]  # the open gap of issue 12


def _neco_demo_change(tmp_path, seed: int) -> dict:
    """{score: change x100} of `configs/neco_dinov2.py:demo` with `seed`, run as the README's
    first command runs it (evaluations at the start and the end)."""
    config = neco_config("demo")
    config.seed = seed
    evals = periodic.from_config(config, str(tmp_path), fit=loop.fit)
    loop.train(config, methods.get("neco"), str(tmp_path), evals=evals)
    print(periodic.before_after(str(tmp_path / "metrics.jsonl")))
    _, _, before, after = periodic.first_and_last(str(tmp_path / "metrics.jsonl"))
    return {name: 100 * (after[name] - before[name]) for name in before}


@pytest.mark.slow
def test_neco_demo_improves_the_shipped_backbone(tmp_path):
    """`configs/neco_dinov2.py:demo` from the shipped long backbone, seeds 0 and 1 (issue 12's
    target, mean of two seeds): Hummingbird gains >= 1.5 points and the linear probe loses at
    most 0.5. Measured +1.21 / +1.81 and -0.13 / -0.81 (scenes_learnability.md): the margin is
    thin, a fifth epoch gives +1.32 / -0.60 on the mean."""
    runs = [_neco_demo_change(tmp_path / f"seed{seed}", seed) for seed in (0, 1)]
    gain = {
        score: np.mean([run[score] for run in runs])
        for score in ("hbird/hbird/full_reference", "linear/linear/miou")
    }
    print(gain)
    assert gain["hbird/hbird/full_reference"] >= 1.5
    assert gain["linear/linear/miou"] >= -0.5
