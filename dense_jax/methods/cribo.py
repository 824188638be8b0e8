"""CrIBo: DINO's global loss plus cross-view and cross-image object losses (cribo.md §4–§6).

Per image two global views and the positions of their patches (``global_pos``, as CrOC);
teacher and student see the same two views. A step, in the reference's order (cribo.md §5):

1. teacher backbone on [v1; v2]: CLS → head → global teacher logits; the final-LN patch
   tokens Z (B, 2N, D) → `cribo_cluster` (fixed K, ``dense_jax.ops.cribo_clustering``) →
   per-view l1-normalised hard assignment Â and validity (B, K); teacher objects
   c_t,v,k = Σ_{n∈v} Â_v[n, k]·Z_v[n] (raw means, `clustering.view_centroids`);
2. search of the bank *before* this step's enqueue (``dense_jax.ops.memory_bank``): nn_v(k) =
   the cosine NN of c_t,v,k in bank v; cycle check: the other view's entry of that match must
   lead back to object k among the valid objects of the other view of k's group
   (`memory_bank.back_search`); valid_v(k) = object valid ∧ bank non-empty ∧ cycle holds;
3. enqueue the teacher objects (invalid ones masked) as this step's ring row;
4. student backbone; student objects with the same Â (gradient flows);
5. losses (all dense logits from the shared-MLP head's ``last_layer_c``, τ_s = ``student_temp``,
   teacher targets softmax((h_c(·) − center_c)/τ_t(e)), τ_t the global schedule):
   L_g = DINO's; L_cv = ½[Σ_k CE(t_1,k, s_2,k) + Σ_k CE(t_2,k, s_1,k)] / n_valid;
   L_ci = ½[Σ_k valid_1(k)·CE(t̃_1,k, s_2,k) + Σ_k valid_2(k)·CE(t̃_2,k, s_1,k)] / Z1 with
   t̃_v,k the teacher target of bank v's entry at nn_v(k), Z1 = Σ valid_1 (the code's
   normalisation of both terms, [P≠C]), 0 when Z1 = 0 or the epoch is below
   ``cross_image_start_epoch`` (1); total L_g + L_cv + L_ci;
6. centres: the global one as DINO; center_c by the mean teacher logits of the valid objects of
   both views (Σ / count over the batch); bank targets do not move it.

Groups (cribo.md §5 [P≠C], §10). The reference's per-GPU batch is explicit: ``cribo.group``
consecutive images form the clustering's min–max normalisation group, the back-search set,
and the pooling unit of L_cv, L_ci and the bootstrap ratio (each a per-group value averaged
over groups, as DDP averages per-GPU losses), so results do not depend on the mesh.

Fix behind a flag: ``cross_image_norm="per_view"`` divides the view-2 term by Z2 and drops
each term whose Z is 0 (paper eq. 8 normalisation); ``cross_image_start_epoch=0`` the paper's
ungated loss. Logged: ``bootstrap_ratio`` = Z1 / n_valid (view 1, as the code), objects per image.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections as mlc

from dense_jax.core import sharding as shd
from dense_jax.core.schedules import per_epoch_linear
from dense_jax.methods import MethodConfigError, croc, dino
from dense_jax.models.build import backbone
from dense_jax.models.heads import DINOHead
from dense_jax.ops import memory_bank
from dense_jax.ops.clustering import view_centroids
from dense_jax.ops.cribo_clustering import CrIBoClusters, cribo_cluster

CROSS_IMAGE_NORMS = ("reference", "per_view")


def heads(config: mlc.ConfigDict) -> DINOHead:
    """DINO's head with a second last layer for objects (cribo.md §6 "Head")."""
    d = config.dino
    return DINOHead(
        d.out_dim,
        d.hidden_dim,
        d.bottleneck_dim,
        d.nlayers,
        d.norm_last_layer,
        dense_dim=config.cribo.out_dim,
    )


def check_config(config: mlc.ConfigDict, process_count: int, data_devices: int) -> None:
    """Raise one `MethodConfigError` listing every inconsistent CrIBo setting (called at start)."""
    c = config.cribo
    vit = backbone(config.model)
    tokens = 2 * (config.crops.global_size // vit.patch_size) ** 2
    problems = croc.two_view_problems(config, "CrIBo")
    if not 1 <= c.k <= tokens:
        problems.append(f"cribo.k = {c.k} must be in [1, 2N = {tokens}]")
    problems += croc.group_problems("cribo.group", c.group, config, process_count)
    if c.bank_init not in memory_bank.INITS:
        problems.append(f"cribo.bank_init must be one of {memory_bank.INITS}, got {c.bank_init!r}")
    if c.cross_image_norm not in CROSS_IMAGE_NORMS:
        problems.append(
            f"cribo.cross_image_norm must be one of {CROSS_IMAGE_NORMS}, got {c.cross_image_norm!r}"
        )
    if c.search_dtype not in ("float32", "bfloat16"):
        problems.append(f"cribo.search_dtype must be float32 or bfloat16, got {c.search_dtype!r}")
    if c.queue_size < 1:
        problems.append(f"cribo.queue_size must be >= 1, got {c.queue_size}")
    else:
        size = memory_bank.bytes_per_device(
            c.queue_size, config.data.batch_size, c.k, vit.embed_dim, data_devices
        )
        if size > c.bank_budget_gib * 2**30:
            problems.append(
                f"the memory bank needs {size / 2**30:.2f} GiB per device (2 views x S={c.queue_size} "
                f"images x K={c.k} x D={vit.embed_dim} fp32 over {data_devices} 'data' devices), more "
                f"than cribo.bank_budget_gib={c.bank_budget_gib}; use more devices on the 'data' mesh "
                f"axis or a smaller cribo.queue_size"
            )
    if problems:
        raise MethodConfigError("bad CrIBo config: " + "; ".join(problems))


def init_aux(config: mlc.ConfigDict, rng: jax.Array) -> dict:
    """Both centres (0) and the bank (`memory_bank.init`, ``cribo.bank_init``); checks the
    config first (this runs when the trainer is built)."""
    data_devices = shd.make_mesh(config.mesh.shape).shape["data"]
    check_config(config, jax.process_count(), data_devices)
    c = config.cribo
    dim = backbone(config.model).embed_dim
    return {
        "center": jnp.zeros((1, config.dino.out_dim), jnp.float32),
        "center_dense": jnp.zeros((1, c.out_dim), jnp.float32),
        "bank": memory_bank.init(c.queue_size, config.data.batch_size, c.k, dim, c.bank_init, rng),
    }


def pos_alpha(config: mlc.ConfigDict, epoch) -> jax.Array:
    """α_pos(e) = linspace(a1, a0, epochs)[e] for ``cribo.pos_alpha`` = (a0, a1) (cribo.md §4)."""
    a0, a1 = config.cribo.pos_alpha
    return per_epoch_linear(epoch, a1, a0, config.train.epochs)


def cluster(tokens, positions, key, epoch, config: mlc.ConfigDict) -> CrIBoClusters:
    """`cribo_cluster` of the teacher tokens (B, 2N, D) at positions (B, 2, N, 2)."""
    c = config.cribo
    return cribo_cluster(
        jax.lax.stop_gradient(tokens),
        positions.reshape(tokens.shape[0], -1, 2),
        key,
        k=c.k,
        lam_pos=pos_alpha(config, epoch),
        norm_group=c.group,
        n_iter=c.n_iter,
        sinkhorn_lambda=c.sinkhorn_lambda,
        sinkhorn_iters=c.sinkhorn_iters,
    )


class Bootstrap(NamedTuple):
    targets: jax.Array  # (2, B, K, D) bank v's entry at nn_v(k): the raw cross-image targets
    cycle: jax.Array  # (2, B, K) bool: valid_1, valid_2 (object valid, match found, cycle holds)
    image: jax.Array  # (2, B, K) int32 image id of each match (pictures, tests)
    object: jax.Array  # (2, B, K) int32 object slot of each match within its image (−1: none)


def bootstrap(bank: dict, objects, valid, c: mlc.ConfigDict, mesh) -> Bootstrap:
    """NN search of the teacher objects (2, B, K, D) in the bank, then the cycle check (cribo.md §5)."""
    _, b, k, dim = objects.shape
    group = c.group
    queries = objects.reshape(2, b * k, dim)
    match = memory_bank.search(
        bank, queries, num_images=c.queue_size, mesh=mesh, chunk=c.search_chunk, dtype=c.search_dtype
    )
    other = match.other.reshape(2, b, k, dim)
    back = jnp.stack(
        [
            memory_bank.back_search(other[0], objects[1], valid, group),
            memory_bank.back_search(other[1], objects[0], valid, group),
        ]
    )
    cycle = back & valid[None] & match.found.reshape(2, b, k)
    image, obj = match.image.reshape(2, b, k), jnp.where(match.found, match.index % k, -1).reshape(2, b, k)
    return Bootstrap(match.same.reshape(2, b, k, dim), cycle, image, obj)


class ObjectLosses(NamedTuple):
    cross_view: jax.Array
    cross_image: jax.Array
    center: jax.Array  # the new center_c
    n_valid: jax.Array  # valid objects of the batch
    bootstrap_ratio: jax.Array  # mean over groups of Z1 / n_valid


def object_losses(
    head, student_head, teacher_head, objects_t, objects_s, boot, valid, center, temp, epoch, config
):
    """L_cv, L_ci and center_c (cribo.md §6; module docstring). objects_t/s (2, B, K, D)."""
    c = config.cribo
    _, b, k, dim = objects_t.shape
    n_groups = b // c.group
    # Heads see a stand-in at masked slots (a zero input's L2 normalisation has a NaN gradient).
    keep = valid[None, ..., None]
    teacher_in = jnp.stack(
        [jnp.where(keep, objects_t, 1.0), jnp.where(boot.cycle[..., None], boot.targets, 1.0)]
    )
    logits_t = head.apply({"params": teacher_head}, teacher_in.reshape(-1, dim), method="dense")
    logits_t = jax.lax.stop_gradient(logits_t)
    logits_s = head.apply(
        {"params": student_head}, jnp.where(keep, objects_s, 1.0).reshape(-1, dim), method="dense"
    )
    probs = dino.teacher_targets(logits_t, center, temp, "center").reshape(2, 2, b, k, -1)
    logprobs = jax.nn.log_softmax(logits_s / c.student_temp, axis=-1).reshape(2, b, k, -1)
    ce = -jnp.sum(probs * logprobs[::-1][None], axis=-1)  # (target kind, view v, B, K): CE(·_v, s_other)

    weights = valid.astype(jnp.float32)
    n_valid = weights.reshape(n_groups, -1).sum(axis=1)
    cv = (ce[0] * weights).reshape(2, n_groups, -1).sum(axis=(0, 2)) / (2.0 * jnp.maximum(n_valid, 1.0))
    hits = boot.cycle.astype(jnp.float32)
    sums = (ce[1] * hits).reshape(2, n_groups, -1).sum(axis=2)  # (view, group)
    z = hits.reshape(2, n_groups, -1).sum(axis=2)  # Z1, Z2 per group
    started = epoch >= c.cross_image_start_epoch
    if c.cross_image_norm == "reference":
        ci = jnp.where(started & (z[0] > 0), 0.5 * sums.sum(axis=0) / jnp.maximum(z[0], 1.0), 0.0)
    else:
        ci = jnp.where(started, 0.5 * jnp.sum(sums / jnp.maximum(z, 1.0), axis=0), 0.0)
    new_center = dino.update_center(
        center,
        logits_t.reshape(2, -1, logits_t.shape[-1])[0],
        c.center_momentum,
        jnp.tile(weights.reshape(-1), 2),
    )
    ratio = jnp.mean(z[0] / jnp.maximum(n_valid, 1.0))
    return ObjectLosses(jnp.mean(cv), jnp.mean(ci), new_center, weights.sum(), ratio)


def loss(student_params, teacher_params, aux, batch, ctx):
    """L_g + L_cv + L_ci, the new centres and bank (module docstring). Returns (loss, (metrics, aux))."""
    config = ctx.config
    d, c = config.dino, config.cribo
    student = backbone(config.model)
    teacher = student.clone(drop_path_rate=0.0)
    head = heads(config)
    views = dino.view_major(batch["global"])
    key_cluster, key_student = jax.random.split(ctx.rng)
    epoch = ctx.schedules.epoch(ctx.step)

    out_t = jax.lax.stop_gradient(teacher.apply({"params": teacher_params["backbone"]}, views))
    logits_t = jax.lax.stop_gradient(head.apply({"params": teacher_params["head"]}, out_t["cls"]))
    tokens_t = croc.joint_tokens(out_t["patch"]).astype(jnp.float32)
    b = tokens_t.shape[0]
    clusters = cluster(tokens_t, batch["global_pos"], key_cluster, epoch, config)
    objects_t = view_centroids(clusters.assign, tokens_t, clusters.valid)
    boot = bootstrap(aux["bank"], objects_t, clusters.valid, c, ctx.mesh)
    image_ids = ctx.step * b + jnp.arange(b, dtype=jnp.int32)
    bank = memory_bank.enqueue(aux["bank"], objects_t, clusters.valid, image_ids, mesh=ctx.mesh)

    out_s = student.apply(
        {"params": student_params["backbone"]}, views, train=True, rngs={"dropout": key_student}
    )
    logits_s = head.apply({"params": student_params["head"]}, out_s["cls"])
    objects_s = view_centroids(clusters.assign, croc.joint_tokens(out_s["patch"]), clusters.valid)

    temp = dino.teacher_temp(config, ctx.step)
    glob = dino.dino_loss(logits_s, logits_t, aux["center"], temp, d.student_temp, 2, d.centering)
    obj = object_losses(
        head,
        student_params["head"],
        teacher_params["head"],
        objects_t,
        objects_s,
        boot,
        clusters.valid,
        aux["center_dense"],
        temp,
        epoch,
        config,
    )
    metrics = {
        "loss_global": glob,
        "loss_cross_view": obj.cross_view,
        "loss_cross_image": obj.cross_image,
        "bootstrap_ratio": obj.bootstrap_ratio,
        "objects_per_image": obj.n_valid / b,
        "teacher_temp": temp,
    }
    new_aux = {
        "center": dino.update_center(aux["center"], logits_t, d.center_momentum),
        "center_dense": obj.center,
        "bank": bank,
    }
    return glob + obj.cross_view + obj.cross_image, (metrics, new_aux)
