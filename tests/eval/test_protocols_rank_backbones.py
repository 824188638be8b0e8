"""The demo protocols tell a backbone that knows the scene classes from a random one.

The good backbone is ``vit_demo16`` trained *with labels* for 300 steps on the class-blind
``hard`` scenes, whose classes a random init cannot read from colour (made once with
``benchmarks/scenes_supervised.py --style hard --export``, float16, 3.7 MB; training it inside
the test took 93 of its 122 s, benchmarks/faults.md). Each protocol must score it
clearly above random init, so a protocol that ignores its features (or scores every backbone
alike) fails here. The data are
pinned (style, size, splits), not taken from the ``:demo`` default, which issue 12 may change.
(On the ``learnable`` scenes, 300 labelled steps lead by 10.1 on the linear probe and 12.0 on
K-means, but Hummingbird scores 47.06 against 47.15: colour alone retrieves as well there.)
"""

import importlib
import os

import pytest

from dense_jax import models
from dense_jax.eval.protocols import run_protocols
from dense_jax.train.loop import fit

LABELLED_BACKBONE = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "assets", "scenes_vit_demo16_hard_supervised.safetensors"
)
DATA = dict(scenes_style="hard", image_size=(128, 128), limit_train=192, limit_val=48)
# protocol config -> (summary score, minimum lead over random init in mIoU points)
# (measured with this file: linear 18.46 vs 6.39, K-means 15.18 vs 9.05, hbird 19.62 vs 8.22)
PROTOCOLS = {"linear_voc": ("miou", 6.0), "kmeans_voc": ("k9", 3.0), "hbird_voc": ("full_reference", 6.0)}


@pytest.fixture(scope="module")
def backbones():
    if not os.path.exists(LABELLED_BACKBONE):
        pytest.fail(
            f"{LABELLED_BACKBONE} is missing; make it with: PYTHONPATH=. python "
            f"benchmarks/scenes_supervised.py --steps 300 --every 0 --style hard --export {LABELLED_BACKBONE}"
        )
    model, trained = models.load("vit_demo16", LABELLED_BACKBONE)
    _, random_init = models.load("vit_demo16", None, seed=1)
    return model, {"trained": trained, "random": random_init}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_trained_backbone_scores_above_random_init(backbones, protocol):
    model, params = backbones
    score, margin = PROTOCOLS[protocol]
    config = importlib.import_module(f"configs.eval.{protocol}").get_config("demo")
    config.data.update(DATA)
    config.hbird.fractions = (1.0,)  # the full memory only: the score asserted
    scores = {}
    for label, p in params.items():
        result = run_protocols(lambda q, x: model.apply({"params": q}, x), p, config, fit=fit)
        scores[label] = 100 * next(iter(result.values()))["summary"][score]
    print(protocol, {k: round(v, 2) for k, v in scores.items()})
    assert scores["trained"] > scores["random"] + margin, scores
