"""NeCo in the generic trainer (neco.md §2 "Optimizer"/"EMA", §3.3–3.5, §8; issue 5).

Fast: the step-0 teacher (student backbone, independently drawn head), the message for a
missing ``init_from``, the optimizer groups and schedules against their closed forms, the
queue read/write of one loss call, and three real steps on one device (backward through the
sort, ROI-align and ViT, EMA, queue).
Slow (one step compile per mesh): mesh parity (1,1)/(8,1)/(4,2), the queue holding each
global crop's teacher tokens after real steps, and the EMA taken with the updated student.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from configs.neco_dinov2 import get_config
from dense_jax.core.schedules import Schedules
from dense_jax.methods import neco
from dense_jax.models import build
from dense_jax.train import optim, restore
from tests.methods.test_neco import _maps, _records
from tests.train.test_trainer import Trainers, max_abs_diff, run_steps

N_STEPS = 3


def smoke_config(shape=(1, 1), fsdp=False):
    config = get_config("smoke")
    config.mesh.shape = shape
    config.mesh.fsdp = fsdp
    return config


@pytest.fixture(scope="module")
def trainers():
    return Trainers(smoke_config)


def test_teacher_starts_with_student_backbone_and_own_head(trainers):
    trainer, _ = trainers.get((1, 1))
    with trainers.context((1, 1)):
        state = jax.device_get(trainer.init())
    assert max_abs_diff(state.teacher["backbone"], state.params["backbone"]) == 0.0
    t, s = (
        np.concatenate([p["mlp"][f"fc{i}"]["kernel"].ravel() for i in (1, 2, 3)])
        for p in (state.teacher["head"], state.params["head"])
    )
    corr = np.corrcoef(t, s)[0, 1]
    print(
        f"head kernels ({t.size}): max |teacher − student| {np.abs(t - s).max():.3f}, correlation {corr:+.3f}"
    )
    assert np.abs(t - s).max() > 0.01 and abs(corr) < 0.1  # independent draws (σ_corr ≈ 0.02), not a copy
    np.testing.assert_allclose(np.std(t), np.std(s), rtol=0.1)  # from the same init distribution
    config = smoke_config()
    config.neco.independent_teacher_head = False
    copied = neco.init_teacher(config, state.params, jax.random.key(1))
    assert max_abs_diff(copied, state.params) == 0.0


def test_missing_init_from_names_the_run_to_make_first(trainers, tmp_path):
    """The demo starts from the shipped scenes backbone; without it, one message says how to
    re-create it."""
    trainer, _ = trainers.get((1, 1))
    config = mlc.ConfigDict(trainer.config.to_dict())
    config.init_from_hint = get_config("demo").init_from_hint
    assert "benchmarks/scenes_backbone.py" in config.init_from_hint
    (tmp_path / "empty").mkdir()
    cases = ((tmp_path / "missing", "not found"), (tmp_path / "empty", "holds no dense_jax checkpoint"))
    for path, problem in cases:
        config.init_from = str(path)
        with trainers.context((1, 1)), pytest.raises(FileNotFoundError) as err:
            restore.load_pretrained_backbone(trainer.init, trainer.shardings, config)
        assert problem in str(err.value) and str(err.value).endswith(config.init_from_hint)


def test_optimizer_groups_and_schedules_in_closed_form(trainers):
    trainer, _ = trainers.get((1, 1))
    config, sched = trainer.config, Schedules(trainer.config)
    total, t = sched.total_steps, 3
    cos = 1.0 + math.cos(math.pi * t / total)
    base = config.optim.lr  # absolute: not scaled by the batch of 8, no warm-up
    m0 = config.teacher.momentum  # cosine from m0 to 1
    lr, wd, momentum = 0.5 * base * cos, 0.5 + 0.5 * (0.04 - 0.5) * cos, 1.0 - (1.0 - m0) * 0.5 * cos
    np.testing.assert_allclose(sched.lr(0), base, rtol=1e-6)
    np.testing.assert_allclose(sched.lr(t), lr, rtol=1e-6)
    np.testing.assert_allclose(sched.weight_decay(t), wd, rtol=1e-6)
    np.testing.assert_allclose(sched.momentum(t), momentum, rtol=1e-7)

    with trainers.context((1, 1)):
        params = jax.device_get(trainer.init().params)
    grads = jax.tree.map(lambda p: np.full_like(p, 0.5), params)
    # First Adam step: m̂/(√v̂ + eps) = g/(|g| + eps) ≈ 1, so u = −lr·scale·(1 + wd·p·[decayed]).
    updates, _ = trainer.tx.update(
        grads, trainer.tx.init(params), params, lr=sched.lr(t), wd=sched.weight_decay(t), freeze=False
    )
    b, h = params["backbone"], params["head"]["mlp"]
    ub, uh = updates["backbone"], updates["head"]["mlp"]
    close = lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)  # noqa: E731
    close(ub["block_0"]["mlp"]["fc1"]["bias"], -lr)  # bias: no decay
    close(ub["norm"]["scale"], -lr)  # 1-D: no decay
    close(ub["block_0"]["mlp"]["fc1"]["kernel"], -lr * (1 + wd * b["block_0"]["mlp"]["fc1"]["kernel"]))
    close(ub["pos_embed"], -lr * (1 + wd * b["pos_embed"]))  # tokens are decayed
    close(uh["fc1"]["bias"], -10 * lr)  # head lr = 10 × backbone
    close(uh["fc3"]["kernel"], -10 * lr * (1 + wd * h["fc3"]["kernel"]))


def test_mask_token_is_never_stepped():
    """DINOv2's mask_token gets no gradient in NeCo; torch's AdamW skips it (no decay either)."""
    params = {
        "backbone": {"mask_token": jnp.ones((1, 4)), "cls_token": jnp.ones((1, 1, 4))},
        "head": {"mlp": {"fc1": {"kernel": jnp.ones((4, 4))}}},
    }
    labels = neco.param_groups(params)
    assert labels == {
        "backbone": {"mask_token": "unused", "cls_token": "backbone"},
        "head": {"mlp": {"fc1": {"kernel": "head"}}},
    }
    tx = optim.build(smoke_config(), labels)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params, lr=0.1, wd=0.5, freeze=False)
    np.testing.assert_array_equal(updates["backbone"]["mask_token"], 0.0)
    np.testing.assert_allclose(updates["backbone"]["cls_token"], -0.05, rtol=1e-6)


def test_queue_is_filled_per_global_crop_and_read_where_filled():
    """One loss call (§3.3, §3.5, §8): crop c's teacher tokens go to the front of queue c, each
    queue counts its own fill, and references come from the filled rows only (NaN elsewhere)."""
    batch, patch, queue_length, n_push = 8, 4, 64, 16
    config = mlc.ConfigDict(dict(crops=dict(n_global=2), neco=get_config("smoke").neco))
    config.neco.update(dict(queue_length=queue_length, queue_push_per_image=n_push // batch, roi_size=3))
    sizes = [6, 6, 3, 3]
    teacher = _maps(jax.random.key(0), batch, sizes[:2], config.neco.out_dim)
    student = _maps(jax.random.key(1), batch, sizes, config.neco.out_dim)
    gc, all_boxes = _records(batch, [s * patch for s in sizes])
    old = _maps(jax.random.key(2), 1, [4], config.neco.out_dim)[0].reshape(n_push, -1)
    nan = jnp.full((queue_length, config.neco.out_dim), jnp.nan)
    queue = jnp.stack([nan.at[:n_push].set(old), nan])  # queue 0: 16 old rows; queue 1: empty

    @jax.jit
    def run(queue, fill):
        return neco.neco_loss(
            teacher,
            student,
            gc,
            all_boxes,
            {"queue": queue, "queue_fill": fill},
            jax.random.key(3),
            config,
            patch,
        )

    loss, _, aux = run(queue, jnp.array([n_push, 0], jnp.int32))
    assert np.isfinite(float(loss))  # no NaN row (unfilled) was read
    np.testing.assert_array_equal(aux["queue_fill"], [2 * n_push, n_push])
    np.testing.assert_array_equal(aux["queue"][0, n_push : 2 * n_push], old)  # FIFO: old rows move back
    for c in range(2):
        tokens = np.asarray(teacher[c]).reshape(-1, config.neco.out_dim)
        pushed = np.asarray(aux["queue"][c, :n_push])
        dist = np.abs(pushed[:, None] - tokens[None]).max(-1)
        other = np.abs(pushed[:, None] - np.asarray(teacher[1 - c]).reshape(1, -1, tokens.shape[1])).max(-1)
        assert dist.min(1).max() == 0.0 and len(set(dist.argmin(1))) == n_push  # distinct crop-c tokens
        assert other.min(1).min() > 0.1
    moved, _, _ = run(queue.at[0, :n_push].multiply(-1.0), jnp.array([n_push, 0], jnp.int32))
    print(f"loss {float(loss):.6f}; with queue 0's old rows negated {float(moved):.6f}")
    assert abs(float(moved) - float(loss)) > 1e-4  # the references are read from the queue


@pytest.fixture(scope="module")
def host_batches(trainers):
    trainer, _ = trainers.get((1, 1))
    it = trainer.data_iterator()
    return [next(it) for _ in range(N_STEPS)]


@pytest.fixture(scope="module")
def reference(trainers, host_batches):
    return run_steps(trainers, (1, 1), False, host_batches)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(8, 1), (4, 2)])
def test_mesh_parity(shape, trainers, host_batches, reference):
    out = run_steps(trainers, shape, False, host_batches, init_state=reference["init"])
    assert out["cache_size"] == 1 and reference["cache_size"] == 1
    loss_diff = np.max(np.abs(np.subtract(out["losses"], reference["losses"])))
    teacher_diff = max_abs_diff(out["teacher"], reference["teacher"])
    print(
        f"mesh {shape}: losses {np.round(reference['losses'], 5)}, max |loss diff| {loss_diff:.1e}, "
        f"max |teacher diff| {teacher_diff:.1e}, max |student diff| "
        f"{max_abs_diff(out['params'], reference['params']):.1e}"
    )
    assert np.all(np.isfinite(reference["losses"]))
    assert loss_diff < 1e-5 and teacher_diff < 1e-5
    assert max_abs_diff(out["params"], reference["params"]) < 1e-5  # moves 2000× more than the teacher
    assert max_abs_diff(out["aux"], reference["aux"]) < 1e-5


@pytest.mark.slow
def test_steps_fill_queues_with_teacher_tokens_and_ema_follows_update(trainers, host_batches, reference):
    trainer, _ = trainers.get((1, 1))
    config = trainer.config
    n_push = config.neco.queue_push_per_image * config.data.batch_size
    np.testing.assert_array_equal(reference["aux"]["queue_fill"], [N_STEPS * n_push] * 2)
    np.testing.assert_array_equal(reference["aux"]["queue"][:, N_STEPS * n_push :], 0.0)

    one = run_steps(trainers, (1, 1), False, host_batches[:1], init_state=reference["init"])
    teacher0 = reference["init"].teacher
    vit = build.backbone(config.model).clone(drop_path_rate=0.0)
    for c in range(2):
        tokens = np.asarray(
            neco._project(vit, neco.heads(config), teacher0, host_batches[0]["global"][:, c], False, None)
        ).reshape(-1, config.neco.out_dim)
        dist = np.abs(one["aux"]["queue"][c, :n_push][:, None] - tokens[None]).max(-1)
        assert dist.min(1).max() < 1e-5 and len(set(dist.argmin(1))) == n_push

    # EMA after the optimizer step (§8): θ_t ← m θ_t + (1 − m) θ_s with the *updated* student.
    # Checked on the head, whose values (|θ| ≲ 0.1) resolve the (1 − m)·lr·10 ≈ 5e-7 at stake.
    m = one["metrics"][0]["momentum"]

    def ema(student):
        return jax.tree.map(lambda t, s: m * t + (1 - m) * s, teacher0["head"], student["head"])

    err_after = max_abs_diff(one["teacher"]["head"], ema(one["params"]))
    err_before = max_abs_diff(one["teacher"]["head"], ema(reference["init"].params))
    print(f"EMA with the updated student: {err_after:.1e}; with the pre-update student: {err_before:.1e}")
    assert err_after < 2e-8 < 1e-7 < err_before


def test_a_few_steps_train_through_sort_roi_align_and_ema(trainers, reference):
    """CI's fast end-to-end step (one compile, N_STEPS steps on one device): the loss is finite
    and changes, gradients reach the ViT through the soft sort and ROI-align (the student
    backbone moves), the EMA teacher follows by less, and every step pushes its tokens into
    both global crops' queues."""
    trainer, _ = trainers.get((1, 1))
    init = reference["init"]
    losses = np.asarray(reference["losses"])
    grad_norms = np.asarray([m["grad_norm"] for m in reference["metrics"]])
    print(f"losses {np.round(losses, 5)}, grad norms {np.round(grad_norms, 4)}")
    assert reference["cache_size"] == 1
    assert np.isfinite(losses).all() and np.abs(np.diff(losses)).min() > 1e-6
    assert np.isfinite(grad_norms).all() and (grad_norms > 0).all()
    student_moved = max_abs_diff(reference["params"]["backbone"], init.params["backbone"])
    teacher_moved = max_abs_diff(reference["teacher"]["backbone"], init.teacher["backbone"])
    assert 0.0 < teacher_moved < student_moved
    n_push = trainer.config.neco.queue_push_per_image * trainer.config.data.batch_size
    np.testing.assert_array_equal(reference["aux"]["queue_fill"], [N_STEPS * n_push] * 2)
    filled = np.asarray(reference["aux"]["queue"][:, : N_STEPS * n_push])
    assert np.isfinite(filled).all() and (np.abs(filled).max(-1) > 0).all()
