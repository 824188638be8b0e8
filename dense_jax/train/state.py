"""The train state: every array a step changes, each leaf with a sharding (jax-practices §2-3).

`create` builds it already sharded: the param/aux init is traced with `jax.eval_shape`, the
logical axis names of the boxed leaves become NamedShardings through the rules table, the
optimizer state borrows each parameter's sharding, and one jit with those out_shardings
materialises the state directly on the mesh.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax
from flax import struct
from jax.sharding import Mesh

from dense_jax import methods
from dense_jax.train import sharding as shd


class TrainState(struct.PyTreeNode):
    """step, student params, EMA teacher, optimizer state and the method's aux state.

    params/teacher: ``{"backbone": ..., "head": ...}``; the teacher is a separate copy (never
    aliasing the student's buffers, which donation would reject).
    """
    step: jax.Array
    params: Any
    teacher: Any
    opt_state: Any
    aux: Any


def init_params(config: mlc.ConfigDict, method: ModuleType, rng: jax.Array) -> dict:
    """Boxed (logically annotated) student params ``{"backbone", "head"}``."""
    vit = methods.backbone(config)
    key_backbone, key_head = jax.random.split(rng)
    size = config.crops.global_size
    images = jnp.zeros((1, size, size, 3), jnp.float32)
    return {"backbone": vit.init(key_backbone, images)["params"],
            "head": methods.init_head(config, method.heads(config), key_head)}


def create(config: mlc.ConfigDict, method: ModuleType, tx: optax.GradientTransformation,
           mesh: Mesh, rules, rng: jax.Array) -> tuple[Callable[[], TrainState], TrainState]:
    """(init, shardings): ``init()`` returns a fresh state placed with ``shardings``.

    The teacher starts as a copy of the student (croc.md §3), unless the method defines
    ``init_teacher(config, student_params, rng) -> teacher_params`` (NeCo's independent head).

    The shardings tree (a `TrainState` of NamedShardings) also serves checkpoint restore.
    """
    key_params, key_aux, key_teacher = jax.random.split(rng, 3)
    init_teacher = getattr(method, "init_teacher", None)

    def boxed():
        return init_params(config, method, key_params), method.init_aux(config, key_aux)

    def build() -> TrainState:
        params, aux = nn.unbox(boxed())
        teacher = (jax.tree.map(jnp.copy, params) if init_teacher is None
                   else init_teacher(config, params, key_teacher))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, teacher=teacher,
                          opt_state=tx.init(params), aux=aux)

    abstract_params, abstract_aux = jax.eval_shape(boxed)
    param_sh = shd.logical_to_mesh(abstract_params, mesh, rules)
    abstract = jax.eval_shape(build)
    repl = shd.replicated(mesh)
    shardings = TrainState(
        step=repl, params=param_sh, teacher=param_sh,
        opt_state=shd.like_params(abstract.opt_state, abstract.params, param_sh, repl),
        aux=shd.logical_to_mesh(abstract_aux, mesh, rules))
    return jax.jit(build, out_shardings=shardings), shardings


def abstract_state(init: Callable[[], TrainState], shardings: TrainState) -> TrainState:
    """ShapeDtypeStructs (with shardings) of the state, for restore targets."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        jax.eval_shape(init), shardings)
