"""CrOC demo against the same-length DINO demo (issue 13 "Demo"; slow: four demo runs, tens of
CPU minutes).

`configs/croc_coco.py:demo` and `configs/dino_coco.py:demo` (same model, data, views and steps)
for seeds 0 and 1, each teacher scored at the end by the `:demo` K-means and linear protocols
(`config.evals`); the CrOC demo draws its cluster PNGs. CrOC's mean over the seeds must be at
least DINO's on both protocols. The numbers are printed for the issue's table. Note: until the
built-in scenes become learnable in demo time (issue 12), both demos score about like a random
initialisation (benchmarks/scenes_learnability.md), so this comparison is mostly noise.
"""

import glob
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import croc_coco, dino_coco
from dense_jax import methods
from dense_jax.eval import periodic
from dense_jax.eval.report import read_jsonl
from dense_jax.train import loop

SCORES = {"kmeans": "eval/kmeans/kmeans/k9", "linear": "eval/linear/linear/miou"}


def demo_scores(module, seed: int, workdir: str) -> dict:
    config = module.get_config("demo")
    config.seed = seed
    config.evals.kmeans = dict(config="configs/eval/kmeans_voc.py:demo", every=0)
    config.evals.linear = dict(config="configs/eval/linear_voc.py:demo", every=0)
    evals = periodic.from_config(config, workdir, fit=loop.fit)
    mesh, rules = loop.mesh_and_rules(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        loop.train(config, methods.get(config.method), workdir, evals=evals)
    last = {k: v for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) for k, v in r.items()}
    return {name: last[key] for name, key in SCORES.items()}


@pytest.mark.slow
def test_croc_demo_at_or_above_dino_demo(tmp_path):
    scores = {
        (name, seed): demo_scores(module, seed, str(tmp_path / f"{name}{seed}"))
        for name, module in (("dino", dino_coco), ("croc", croc_coco))
        for seed in (0, 1)
    }
    for (name, seed), value in scores.items():
        print(f"{name} seed {seed}: K-means {100 * value['kmeans']:.2f}, linear {100 * value['linear']:.2f}")
    assert glob.glob(str(tmp_path / "croc0" / "eval" / "clusters" / "step_*" / "croc_clusters.png"))
    for protocol in SCORES:
        croc = np.mean([scores["croc", s][protocol] for s in (0, 1)])
        dino = np.mean([scores["dino", s][protocol] for s in (0, 1)])
        assert croc >= dino, (protocol, croc, dino)
