"""The train state: every array a step changes, each leaf with a sharding (jax-practices §2-3).

`create` builds it already sharded: the param/aux init is traced with `jax.eval_shape`, the
logical axis names of the boxed leaves become NamedShardings through the rules table, the
optimizer state borrows each parameter's sharding, and one jit with those out_shardings
materialises the state directly on the mesh.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from dense_jax.core import sharding as shd
from dense_jax.models import build

if TYPE_CHECKING:  # configs are ml_collections files; the step runs without the package
    import ml_collections as mlc


class TrainState(struct.PyTreeNode):
    """step, student params, EMA teacher, optimizer state, the method's aux state and the
    student's non-parameter collections.

    params/teacher: ``{"backbone": ..., "head": ...}``; the teacher is a separate copy (never
    aliasing the student's buffers, which donation would reject), or ``{}`` when
    ``config.teacher.ema`` is off. model_state: e.g. ``{"head": {"batch_stats": ...}}``, ``{}``
    for models without BatchNorm.
    """

    step: jax.Array
    params: Any
    teacher: Any
    opt_state: Any
    aux: Any
    model_state: Any


def init_variables(config: mlc.ConfigDict, method: ModuleType, rng: jax.Array) -> tuple[dict, dict]:
    """Boxed (logically annotated) student params ``{"backbone", "head"}`` and the head's
    non-parameter collections (``{"head": ...}``, or ``{}`` when it has none). An empty
    ``config.model.variant`` means no backbone (a head trained on precomputed features)."""
    key_backbone, key_head = jax.random.split(rng)
    size = config.crops.global_size
    backbone_params = {}
    if config.model.variant:
        backbone_params, _ = build.init_variables(
            build.backbone(config.model), key_backbone, (1, size, size, 3)
        )
    input_shape = getattr(method, "head_input_shape", build.head_input_shape)(config)
    head_params, head_state = build.init_head(config, method.heads(config), key_head, input_shape)
    return {"backbone": backbone_params, "head": head_params}, ({"head": head_state} if head_state else {})


def init_params(config: mlc.ConfigDict, method: ModuleType, rng: jax.Array) -> dict:
    """The boxed student params of `init_variables`."""
    return init_variables(config, method, rng)[0]


def create(
    config: mlc.ConfigDict,
    method: ModuleType,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    rules,
    rng: jax.Array,
) -> tuple[Callable[[], TrainState], TrainState]:
    """(init, shardings): ``init()`` returns a fresh state placed with ``shardings``.

    The teacher starts as a copy of the student (croc.md §3), unless the method defines
    ``init_teacher(config, student_params, rng) -> teacher_params`` (NeCo's independent head);
    with ``config.teacher.ema`` off there is none (``{}``).

    The shardings tree (a `TrainState` of NamedShardings) also serves checkpoint restore.
    """
    key_params, key_aux, key_teacher = jax.random.split(rng, 3)
    init_teacher = getattr(method, "init_teacher", None)

    def boxed():
        params, model_state = init_variables(config, method, key_params)
        return params, method.init_aux(config, key_aux), model_state

    def build() -> TrainState:
        params, aux, model_state = nn.unbox(boxed())
        if not config.teacher.ema:
            teacher = {}
        elif init_teacher is None:
            teacher = jax.tree.map(jnp.copy, params)
        else:
            teacher = init_teacher(config, params, key_teacher)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            teacher=teacher,
            opt_state=tx.init(params),
            aux=aux,
            model_state=model_state,
        )

    abstract_params, abstract_aux, abstract_model_state = jax.eval_shape(boxed)
    param_sh = shd.logical_to_mesh(abstract_params, mesh, rules)
    abstract = jax.eval_shape(build)
    repl = shd.replicated(mesh)
    shardings = TrainState(
        step=repl,
        params=param_sh,
        teacher=param_sh if config.teacher.ema else {},
        opt_state=shd.like_params(abstract.opt_state, abstract.params, param_sh, repl),
        aux=shd.logical_to_mesh(abstract_aux, mesh, rules),
        model_state=shd.logical_to_mesh(abstract_model_state, mesh, rules),
    )
    return jax.jit(build, out_shardings=shardings), shardings


def abstract_state(init: Callable[[], TrainState], shardings: TrainState) -> TrainState:
    """ShapeDtypeStructs (with shardings) of the state, for restore targets."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), jax.eval_shape(init), shardings
    )
