"""NeCo loss pieces (neco.md §3, §4 test vectors, §7 checks 5, 11; §8 queue fix)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.neco_dinov2 import neco_section
from dense_jax.methods import neco
from dense_jax.ops.sorting import soft_sort


def _neco_section(**overrides):
    section = neco_section()
    section.update(overrides)
    return section


def test_loss_matches_spec_vector():
    """neco.md §4: bitonic cauchy β=10, x_s=[.3,.1,.4,.2], x_t=[.35,.05,.4,.25]."""
    with jax.enable_x64():
        _, ps = soft_sort(jnp.array([[0.3, 0.1, 0.4, 0.2]], jnp.float64), steepness=10.0)
        _, pt = soft_sort(jnp.array([[0.35, 0.05, 0.4, 0.25]], jnp.float64), steepness=10.0)
        np.testing.assert_allclose(float(neco.ranking_cross_entropy(pt, ps, 1e-30)), 1.208935, atol=1e-6)
        np.testing.assert_allclose(float(neco.ranking_cross_entropy(pt, pt, 1e-30)), 1.184625, atol=1e-6)
        np.testing.assert_allclose(float(neco.ranking_cross_entropy(ps, pt, 1e-30)), 1.251756, atol=1e-6)


def _tokens(key, batch=2, n=9, dim=8):
    k1, k2, k3 = jax.random.split(key, 3)
    return (
        jax.random.normal(k1, (batch, n, dim)),
        jax.random.normal(k2, (batch, n, dim)),
        jax.random.normal(k3, (batch, n, dim)),
    )


def test_fixed_point_gradient_is_zero_and_loss_is_entropy():
    c = _neco_section()
    teacher, student, refs = _tokens(jax.random.key(0))

    def f(s):
        return neco.pair_loss(teacher, s, refs, c)

    (loss_eq, entropy), grad_eq = jax.value_and_grad(f, has_aux=True)(teacher)
    (loss_ne, _), grad_ne = jax.value_and_grad(f, has_aux=True)(student)
    print(
        f"\n[neco] fixed point: loss={float(loss_eq):.6f} entropy={float(entropy):.6f} "
        f"max|grad|={float(jnp.abs(grad_eq).max()):.2e}; "
        f"off point max|grad|={float(jnp.abs(grad_ne).max()):.2e}"
    )
    np.testing.assert_allclose(float(loss_eq), float(entropy), rtol=1e-6)
    assert float(loss_eq) > 0.1  # the loss is the row entropy there, not 0
    assert float(jnp.abs(grad_eq).max()) < 1e-6
    assert np.isfinite(np.asarray(grad_ne)).all() and float(jnp.abs(grad_ne).max()) > 1e-4
    assert float(loss_ne) > float(loss_eq)


def test_queue_fifo_and_per_queue_fill():
    queue = jnp.zeros((8, 2))
    tokens = jnp.arange(1, 11, dtype=jnp.float32)[:, None] * jnp.ones((1, 2))
    q, fill = neco.push_queue(queue, jnp.int32(0), tokens, jax.random.key(1), 3)
    assert int(fill) == 3
    assert (
        set(np.asarray(q[:3, 0]).tolist()) <= set(range(1, 11))
        and len(set(np.asarray(q[:3, 0]).tolist())) == 3
    )
    np.testing.assert_array_equal(q[3:], 0)
    q2, fill2 = neco.push_queue(q, fill, tokens * 100, jax.random.key(2), 3)
    np.testing.assert_array_equal(q2[3:6], q[:3])  # older rows move back (FIFO)
    assert int(fill2) == 6
    refs = neco.queue_references(q2, fill2, jax.random.key(3), batch=2, n_refs=3)
    assert refs.shape == (2, 3, 2)
    assert float(jnp.abs(refs).min()) > 0  # only filled rows are read: no zero vectors


def test_init_aux_one_counter_per_global_crop():
    import ml_collections as mlc

    config = mlc.ConfigDict(dict(neco=_neco_section(queue_length=16, out_dim=4), crops=dict(n_global=2)))
    aux = neco.init_aux(config, jax.random.key(0))
    assert aux["queue"].shape == (2, 16, 4) and aux["queue_fill"].shape == (2,)


def _maps(key, batch, sizes, dim):
    keys = jax.random.split(key, len(sizes))
    maps = []
    for k, s in zip(keys, sizes):
        x = jax.random.normal(k, (batch, s, s, dim))
        maps.append(x / jnp.linalg.norm(x, axis=-1, keepdims=True))
    return maps


def _records(batch, sizes):
    """Box records of views that all cover the whole image (each pair overlaps fully)."""
    n_global = 2
    gc = jnp.stack(
        [jnp.stack([jnp.array([0.0, 0.0, sizes[c], sizes[c]]) for _ in sizes]) for c in range(n_global)]
    )
    all_boxes = jnp.stack([jnp.stack([jnp.array([0.0, 0.0, s, s])] * n_global) for s in sizes])
    return jnp.broadcast_to(gc, (batch,) + gc.shape), jnp.broadcast_to(all_boxes, (batch,) + all_boxes.shape)


@pytest.mark.parametrize("queue_length", [0, 32])
def test_neco_loss_shapes_and_mesh_parity(queue_length):
    import ml_collections as mlc

    config = mlc.ConfigDict(
        dict(
            neco=_neco_section(queue_length=queue_length, roi_size=3, out_dim=8, queue_push_per_image=2),
            crops=dict(n_global=2),
        )
    )
    batch, patch = 8, 4
    sizes = [6, 6, 3, 3]
    teacher = _maps(jax.random.key(0), batch, sizes[:2], 8)
    student = _maps(jax.random.key(1), batch, sizes, 8)
    gc, all_boxes = _records(batch, [s * patch for s in sizes])
    aux = neco.init_aux(config, None)

    def run(t, s, g, a, x):
        return neco.neco_loss(t, s, g, a, x, jax.random.key(5), config, patch)

    loss1, metrics1, aux1 = jax.jit(run)(teacher, student, gc, all_boxes, aux)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    shard = jax.sharding.NamedSharding(mesh, jax.P("data"))

    def put(tree):
        return jax.device_put(tree, shard)

    loss8, metrics8, aux8 = jax.jit(run)(put(teacher), put(student), put(gc), put(all_boxes), aux)
    print(f"\n[neco] queue={queue_length} loss 1 dev {float(loss1):.7f} vs 8 dev {float(loss8):.7f}")
    np.testing.assert_allclose(float(loss1), float(loss8), rtol=1e-6)
    assert jax.tree.structure(aux1) == jax.tree.structure(aux8)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), aux1, aux8)
    assert np.isfinite(float(loss1)) and float(metrics1["kl"]) > 0
    if queue_length:
        np.testing.assert_array_equal(aux1["queue_fill"], [16, 16])
    else:
        assert aux1 == {}  # batch references: no state (orbax cannot save zero-size arrays)
