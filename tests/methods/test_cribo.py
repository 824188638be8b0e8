"""CrIBo's loss pieces (methods/cribo.py; cribo.md §5, §6, §9 checks 8, 9):

- L_cv, L_ci, center_c and the bootstrap ratio equal a NumPy transcription of cribo.md §6 on the
  head's logits, per group, with the fixture of check 9 (group 0: Z1 = 2, Z2 = 1 ⇒ both sums
  / 2; group 1: Z1 = 0, Z2 > 0 ⇒ L_ci = 0), epoch 0 ⇒ L_ci = 0, and the paper's per-view
  normalisation behind its flag;
- masked objects and failed cycles count nowhere: changing their inputs changes nothing;
- the whole loss on the smoke ViT is finite, its gradient too, and reaches the backbone and
  the object last layer;
- bad settings (group, bank budget with the per-device size and the fix) stop the trainer build.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.cribo_coco import get_config
from dense_jax.core import sharding as shd
from dense_jax.core.context import StepContext
from dense_jax.core.schedules import Schedules
from dense_jax.methods import MethodConfigError, cribo
from dense_jax.train import loop
from dense_jax.train import state as state_lib
from tests.methods.test_croc import views_batch

F32 = np.float32
B, K = 4, 3


def smoke(**overrides):
    c = get_config("smoke")
    c.train.steps_per_epoch = 8
    c.cribo.update({"group": 2, **overrides})
    return c


@pytest.fixture(scope="module")
def setup():
    config = smoke()
    params = jax.jit(lambda k: nn.unbox(state_lib.init_params(config, cribo, k)))(jax.random.key(0))
    teacher = jax.tree.map(lambda x: x * 1.01, params)
    return config, params, teacher


def pieces(config, seed=0):
    rng = np.random.default_rng(seed)
    dim = config.model.embed_dim
    objects_t = rng.normal(size=(2, B, K, dim)).astype(F32)
    objects_s = rng.normal(size=(2, B, K, dim)).astype(F32)
    targets = rng.normal(size=(2, B, K, dim)).astype(F32)
    valid = np.ones((B, K), bool)
    valid[3, 2] = False
    cycle = np.zeros((2, B, K), bool)
    cycle[0, 0, 0] = cycle[0, 1, 1] = True  # group 0: Z1 = 2
    cycle[1, 0, 2] = True  # group 0: Z2 = 1
    cycle[1, 2, 0] = cycle[1, 3, 1] = True  # group 1: Z1 = 0, Z2 = 2
    center = rng.normal(size=(1, config.cribo.out_dim)).astype(F32) * 0.1
    return objects_t, objects_s, targets, valid, cycle, center


def run(config, params, teacher, objects_t, objects_s, targets, valid, cycle, center, epoch):
    ids = jnp.zeros(cycle.shape, jnp.int32)
    boot = cribo.Bootstrap(jnp.asarray(targets), jnp.asarray(cycle), ids, ids)
    return cribo.object_losses(
        cribo.heads(config),
        params["head"],
        teacher["head"],
        objects_t,
        objects_s,
        boot,
        valid,
        center,
        0.05,
        epoch,
        config,
    )


def np_losses(config, params, teacher, objects_t, objects_s, targets, valid, cycle, center, epoch):
    head, c = cribo.heads(config), config.cribo

    def logits(p, x):
        return np.asarray(head.apply({"params": p["head"]}, jnp.asarray(x), method="dense"), np.float64)

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    t = softmax((logits(teacher, objects_t) - center) / 0.05)
    tn = softmax((logits(teacher, targets) - center) / 0.05)
    ls = logits(params, objects_s) / c.student_temp
    logs = ls - ls.max(-1, keepdims=True)
    logs = logs - np.log(np.exp(logs).sum(-1, keepdims=True))
    cv, ci, ratio = [], [], []
    for g0 in range(0, B, c.group):
        sl = slice(g0, g0 + c.group)
        ok, h1, h2 = valid[sl], cycle[0, sl], cycle[1, sl]
        ce = [-(t[v, sl] * logs[1 - v, sl]).sum(-1) for v in range(2)]
        cen = [-(tn[v, sl] * logs[1 - v, sl]).sum(-1) for v in range(2)]
        cv.append(0.5 * (ce[0][ok].sum() + ce[1][ok].sum()) / ok.sum())
        z1 = h1.sum()
        if c.cross_image_norm == "reference":
            value = 0.5 * (cen[0][h1].sum() + cen[1][h2].sum()) / z1 if z1 > 0 else 0.0
        else:
            value = 0.5 * sum(cen[v][h].sum() / h.sum() for v, h in ((0, h1), (1, h2)) if h.sum() > 0)
        ci.append(value if epoch >= c.cross_image_start_epoch else 0.0)
        ratio.append(z1 / ok.sum())
    raw = logits(teacher, objects_t)
    mean = (raw * valid[None, ..., None]).sum((0, 1, 2)) / (2 * valid.sum())
    return np.mean(cv), np.mean(ci), 0.9 * center + 0.1 * mean, np.mean(ratio), (cv, ci)


@pytest.mark.parametrize("epoch, norm", [(1, "reference"), (0, "reference"), (1, "per_view")])
def test_object_losses_match_numpy(setup, epoch, norm):
    config, params, teacher = setup
    config = smoke(cross_image_norm=norm)
    inputs = pieces(config)
    got = run(config, params, teacher, *inputs, epoch)
    cv, ci, center, ratio, (_, ci_groups) = np_losses(config, params, teacher, *inputs, epoch)
    np.testing.assert_allclose(got.cross_view, cv, rtol=1e-5)
    np.testing.assert_allclose(got.cross_image, ci, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.center, center, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.bootstrap_ratio, ratio, rtol=1e-6)
    assert int(got.n_valid) == B * K - 1
    if epoch == 0:
        assert float(got.cross_image) == 0.0
    elif norm == "reference":
        assert ci_groups[1] == 0.0 and ci_groups[0] > 0  # Z1 = 0 ⇒ 0 although Z2 = 2
    else:
        assert ci_groups[1] > 0


def test_masked_objects_and_failed_cycles_count_nowhere(setup):
    config, params, teacher = setup
    objects_t, objects_s, targets, valid, cycle, center = pieces(config)
    base = run(config, params, teacher, objects_t, objects_s, targets, valid, cycle, center, 1)
    noisy = [x.copy() for x in (objects_t, objects_s, targets)]
    for x in noisy[:2]:
        x[:, 3, 2] = 50.0  # the invalid object
    noisy[2][~cycle] = objects_t[0, 0, 0]  # failed cycles hold a copy of a query
    other = run(config, params, teacher, *noisy, valid, cycle, center, 1)
    for a, b in zip(base, other):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    changed = objects_s.copy()
    changed[:, 0, 0] += 1.0  # a valid object moves the loss (the test can fail)
    assert not np.allclose(
        run(config, params, teacher, objects_t, changed, targets, valid, cycle, center, 1)[0], base[0]
    )


def test_loss_and_gradient_finite_and_reaching_the_backbone(setup):
    config, params, teacher = setup
    aux = jax.jit(lambda k: nn.unbox(cribo.init_aux(config, k)))(jax.random.key(2))
    batch = views_batch(config)
    mesh = shd.make_mesh((1, 1))
    ctx = StepContext(config, mesh, Schedules(config), jnp.int32(9), jax.random.key(1))  # epoch 1

    def total(p):
        return cribo.loss(p, teacher, aux, batch, ctx)

    (value, (metrics, new_aux)), grads = jax.jit(jax.value_and_grad(total, has_aux=True))(params)
    assert np.isfinite(value) and metrics["objects_per_image"] > 0
    np.testing.assert_allclose(
        value, metrics["loss_global"] + metrics["loss_cross_view"] + metrics["loss_cross_image"], rtol=1e-6
    )
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(grads))
    assert np.abs(np.asarray(grads["head"]["last_layer_c"]["kernel"])).sum() > 0
    assert sum(float(np.abs(x).sum()) for x in jax.tree.leaves(grads["backbone"])) > 0
    assert int(new_aux["bank"]["ptr"]) == 1 and np.asarray(new_aux["bank"]["image"][0]).tolist() == list(
        range(72, 80)
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(group=3), "cribo.group = 3 must be a positive divisor of the per-host batch 8"),
        (dict(k=9), "cribo.k = 9 must be in [1, 2N = 8]"),
        (dict(bank_init="zeros"), "cribo.bank_init must be one of ('reference', 'empty')"),
        (
            dict(queue_size=10**6, bank_budget_gib=0.01),
            "the memory bank needs 0.09 GiB per device (2 views x S=1000000 images x K=3 x D=32 fp32 "
            "over 8 'data' devices), more than cribo.bank_budget_gib=0.01; use more devices on the "
            "'data' mesh axis or a smaller cribo.queue_size",
        ),
    ],
)
def test_bad_config_stops_the_trainer_build(overrides, message):
    config = smoke(**overrides)
    mesh, rules = loop.mesh_and_rules(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), pytest.raises(MethodConfigError) as err:
        loop.build_trainer(config, cribo, mesh, rules)
    assert message in str(err.value)
