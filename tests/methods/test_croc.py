"""CrOC's loss on the smoke ViT (methods/croc.py; croc.md §4, §6, §9 checks 6, 9, 10).

- the loss and its gradient are finite (no NaN from the zero centroids of invalid slots),
  and the gradient of L_dense alone reaches the shared MLP, the dense
  last layer and the backbone but not the global last layer (§9.10);
- invalid slots contribute nothing: appending dead slots, or filling invalid slots with
  assignment mass, leaves the dense loss, its centre and the count unchanged (§9.9);
- identical views with identical positions give equal teacher centroids per view (§9.6);
- centroids (L2 + the group's CLS-norm rescaling) equal a NumPy transcription to 1e-5 and pass
  the gradient to the student's CLS tokens;
- g frozen ⇒ unit-norm effective rows of both last layers; trained g ⇒ rows of norm g (§9.10);
- a bad norm_group / K_start / K_max stops the trainer's build with one message.
"""

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.croc_coco import get_config
from dense_jax.core.context import StepContext
from dense_jax.core.schedules import Schedules
from dense_jax.data.pipeline import crop_spec
from dense_jax.data.sources import Scenes
from dense_jax.data.transforms import MultiCropTransform
from dense_jax.methods import MethodConfigError, croc, dino
from dense_jax.models.build import backbone
from dense_jax.train import loop
from dense_jax.train import state as state_lib
from tests.train.test_trainer import REPO

F32 = np.float32


def smoke(**croc_overrides):
    c = get_config("smoke")
    c.train.steps_per_epoch = 8
    c.croc.update(croc_overrides)
    return c


def views_batch(config, n=8, identical=False):
    """A host batch of the config's crops of `n` scenes; with `identical`, view 2 := view 1."""
    source, transform = Scenes("train", n, (48, 48)), MultiCropTransform(crop_spec(config))
    rng = np.random.default_rng(0)
    items = [transform.random_map(source[i], rng) for i in range(n)]
    batch = {k: np.stack([it[k] for it in items]) for k in ("global", "global_pos")}
    if identical:
        batch = {k: np.repeat(v[:, :1], 2, axis=1) for k, v in batch.items()}
    return {k: jnp.asarray(v) for k, v in batch.items()}


@pytest.fixture(scope="module")
def setup():
    config = smoke()
    params = jax.jit(lambda k: nn.unbox(state_lib.init_params(config, croc, k)))(jax.random.key(0))
    teacher = jax.tree.map(lambda x: x * 1.01, params)  # differs from the student
    aux = croc.init_aux(config, None)
    return config, params, teacher, aux, views_batch(config)


def _ctx(config):
    return StepContext(config, None, Schedules(config), jnp.int32(3), jax.random.key(1))


def test_loss_finite_and_dense_gradient_reaches_the_shared_mlp(setup):
    config, params, teacher, aux, batch = setup
    ctx = _ctx(config)

    def dense_part(p):
        value, (metrics, _) = croc.loss(p, teacher, aux, batch, ctx)
        return metrics["loss_dense"], (value, metrics)

    (_, (value, metrics)), grads = jax.jit(jax.value_and_grad(dense_part, has_aux=True))(params)
    assert np.isfinite(value) and metrics["loss_dense"] > 0 and metrics["clusters_per_image"] > 0
    np.testing.assert_allclose(value, metrics["loss_global"] + metrics["loss_dense"], rtol=1e-6)
    head = grads["head"]
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(grads))  # dead slots give no NaN

    def norm(tree):
        return float(sum(np.abs(x).sum() for x in jax.tree.leaves(tree)))

    assert all(norm(head["mlp"][f"fc{i}"]) > 0 for i in (1, 2, 3))  # shared MLP
    assert norm(head["last_layer_c"]) > 0 and norm(grads["backbone"]) > 0
    assert norm(head["last_layer"]) == 0.0  # the global last layer is not on the dense path


def test_invalid_and_dead_slots_contribute_nothing(setup):
    config, params, teacher, _, batch = setup
    vit, head = backbone(config.model).clone(drop_path_rate=0.0), croc.heads(config)
    views = dino.view_major(batch["global"])
    out_t = vit.apply({"params": teacher["backbone"]}, views)
    out_s = vit.apply({"params": params["backbone"]}, views)
    clusters = croc.cluster_views(out_t, batch["global_pos"], jax.random.key(0), config.croc)
    assign, valid = np.asarray(clusters.assign), np.asarray(clusters.valid)
    assert valid.any() and (~valid).any()
    tokens = [(croc.joint_tokens(o["patch"]), o["cls"]) for o in (out_t, out_s)]
    center = jnp.full((1, config.croc.out_dim), 0.1, jnp.float32)

    @jax.jit
    def dense(assign, valid):
        return croc.dense_objective(
            head, params["head"], teacher["head"], assign, valid, *tokens, center, 0.05, config
        )

    base = dense(assign, valid)
    dead = 3  # extra slots: no mass, not valid
    padded = dense(
        np.concatenate([assign, np.zeros(assign.shape[:2] + (dead,), F32)], -1),
        np.concatenate([valid, np.zeros((valid.shape[0], dead), bool)], -1),
    )
    noisy = assign.copy()  # mass in the invalid slots
    noisy[np.broadcast_to(~valid[:, None, :], assign.shape)] = 0.7
    filled = dense(noisy, valid)
    for other in (padded, filled):
        np.testing.assert_allclose(other.loss, base.loss, rtol=1e-6)
        np.testing.assert_allclose(other.center, base.center, rtol=1e-6, atol=1e-7)
        assert int(other.n_valid) == int(base.n_valid) == valid.sum()
    # ... while mass moved between *valid* slots changes the loss (the test can fail).
    moved = assign.copy()
    moved[:, :, 0] = 0.0
    assert not np.allclose(dense(moved, valid).loss, base.loss)


def test_identical_views_give_equal_teacher_centroids(setup):
    config, _, teacher, _, _ = setup
    batch = views_batch(config, identical=True)
    vit = backbone(config.model).clone(drop_path_rate=0.0)
    out = vit.apply({"params": teacher["backbone"]}, dino.view_major(batch["global"]))
    clusters = croc.cluster_views(out, batch["global_pos"], jax.random.key(0), config.croc)
    cent = np.asarray(
        croc.centroids(
            clusters.assign,
            clusters.valid,
            croc.joint_tokens(out["patch"]),
            out["cls"],
            config.croc.norm_group,
        )
    )
    valid = np.asarray(clusters.valid)
    nonempty = np.asarray(clusters.assign).sum(1) > 0
    np.testing.assert_array_equal(valid, nonempty)  # every non-empty cluster spans both views
    np.testing.assert_allclose(cent[0][valid], cent[1][valid], atol=1e-6)
    assert valid.any() and np.all(np.linalg.norm(cent[:, valid], axis=-1) > 0)
    assert np.all(cent[:, ~valid] == 0)


def test_centroids_match_numpy_and_pass_gradient_to_cls():
    rng = np.random.default_rng(3)
    B, H, N, K, D, group = 4, 2, 5, 3, 6, 2
    assign = rng.random((B * H, 2 * N, K)).astype(F32)
    valid = rng.random((B * H, K)) < 0.7
    tokens = rng.normal(size=(B, 2 * N, D)).astype(F32)
    cls = rng.normal(size=(2 * B, D)).astype(F32)
    got = np.asarray(croc.centroids(assign, valid, tokens, cls, group))
    norms = np.linalg.norm(cls, axis=-1).reshape(2, B)  # view-major CLS rows
    for s in range(B * H):
        b = s // H
        g0 = b // group * group
        scale = norms[:, g0 : g0 + group].mean()
        for v in range(2):
            c = assign[s, v * N : (v + 1) * N].T @ tokens[b, v * N : (v + 1) * N]
            want = scale * c / np.linalg.norm(c, axis=-1, keepdims=True)
            np.testing.assert_allclose(got[v, s], np.where(valid[s][:, None], want, 0), atol=1e-5)
    grad = jax.grad(lambda c: croc.centroids(assign, valid, tokens, c, group).sum())(jnp.asarray(cls))
    assert np.abs(np.asarray(grad)).min() > 0  # every CLS token scales its group's centroids


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_last_layers_have_unit_rows_when_g_is_frozen(norm_last_layer):
    config = smoke()
    config.dino.norm_last_layer = norm_last_layer
    head = croc.heads(config)
    params = nn.unbox(head.init(jax.random.key(0), jnp.zeros((1, 32))))["params"]
    dim = config.dino.bottleneck_dim
    assert set(params) == {"mlp", "last_layer", "last_layer_c"}
    expected = 1.0
    if not norm_last_layer:
        params = jax.tree_util.tree_map_with_path(
            lambda path, x: 2.0 * x if path[-1].key == "g" else x, params
        )
        expected = 2.0
    for layer in ("last_layer", "last_layer_c"):
        # rows of torch's (out, in) weight = columns of the effective (in, out) matrix
        w = head.apply({"params": params}, jnp.eye(dim), method=lambda m, x: getattr(m, layer)(x))
        np.testing.assert_allclose(np.linalg.norm(np.asarray(w), axis=0), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(norm_group=3), "croc.norm_group = 3 must be a positive divisor of the per-host batch 8"),
        (dict(k_start=1, k_max=1), "croc.k_start must be >= 2"),
        (dict(k_max=5), "croc.k_max must satisfy 2 <= k_max <= k_start = 4"),
    ],
)
def test_bad_config_stops_the_trainer_build(overrides, message):
    config = smoke(**overrides)
    mesh, rules = loop.mesh_and_rules(config)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), pytest.raises(MethodConfigError) as err:
        loop.build_trainer(config, croc, mesh, rules)
    assert message in str(err.value)


def test_bad_config_is_one_line_from_the_cli(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dense_jax.main",
            "--config=configs/croc_coco.py:smoke",
            f"--workdir={tmp_path}",
            "--config.croc.norm_group=3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: bad CrOC config: croc.norm_group = 3")
    assert "Traceback" not in proc.stderr
