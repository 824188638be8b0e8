"""CrOC: DINO's global loss plus a dense loss on joint-view clusters (croc.md §2–§7).

Per image the pipeline gives two global views and the (x, y) original-image position of every
patch of each (``global_pos``, (B, 2, N, 2), croc.md §2); teacher and student see the same two
views, there are no local crops. A step:

1. teacher backbone on [v1; v2] (view-major): CLS → head → global teacher logits; the last
   block's q, k or v (``croc.features``) per head → `croc_cluster` of the 2N joint tokens of
   every (image, head) sample (croc.md §4–§5; the op is ``dense_jax.ops.clustering``), giving
   a hard assignment A (S, 2N, K_start) and a validity mask (S, K_start), S = B·H;
2. teacher and student centroids from the final-LN patch tokens of each view,
   c_v,k = Σ_{n∈v} A[n, k]·Z_v[n] (`view_centroids`), then ĉ = cls_norm · c / ‖c‖ with
   cls_norm the mean ‖CLS‖ of that network's 2·g CLS tokens of the normalisation group
   (the student's keeps its gradient, croc.md §4 "Hard assignment, pruning, centroids");
3. L_glob = DINO's loss on the CLS logits (`dino.dino_loss`, centre ``aux["center"]``);
   L_dense = ½[CE(t_1,k, s_2,k) + CE(t_2,k, s_1,k)] averaged over the valid (image, head,
   cluster) slots, with t = softmax((h_c(ĉ_t) − center_c)/τ_t) and s = h_c(ĉ_s)/τ_s (croc.md
   §6 "Dense loss"); total = L_glob + α·L_dense;
4. both centres move with the old values used in the loss: the global one as DINO's, the dense
   one ``aux["center_dense"]`` by the mean of the valid teacher centroid logits of both views
   over the whole batch (Σ / count, so its value does not depend on the device count).

Static shapes (croc.md §5): every sample keeps K_start slots; the head runs on all of them and
invalid slots are masked out of the loss, the dense centre and every count (guarded by
max(count, 1)). The head is `DINOHead` with ``dense_dim``: one shared MLP, the weight-normed
``last_layer`` (``dino.out_dim``) for CLS tokens and ``last_layer_c`` (``croc.out_dim``) for
centroids; both last layers are frozen together for ``optim.freeze_last_layer`` epochs.

Normalisation group (croc.md §4 step 3, §10). The reference min–max normalises the clustering
costs, takes the CLS norm and averages the dense loss within one GPU's batch, and DDP then
averages the per-GPU losses. Here that batch is ``croc.norm_group`` consecutive images, so the
result does not depend on the mesh: the cost normalisation and the CLS norms run per group, the
dense loss is the pooled mean over each group's valid slots, averaged over the groups (for a
single group: the pooled mean of croc.md §6). ``norm_group`` must divide the per-host batch.

The dense teacher temperature follows the global one (``dino.warmup_teacher_temp`` →
``dino.teacher_temp`` over ``dino.warmup_teacher_temp_epochs``; the reference uses one
schedule for both), the dense student temperature is ``croc.student_temp``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from dense_jax.methods import MethodConfigError, dino
from dense_jax.models.build import backbone
from dense_jax.models.heads import DINOHead, l2_normalize
from dense_jax.ops.clustering import CrOCClusters, croc_cluster, view_centroids

if TYPE_CHECKING:  # configs are ml_collections files; the step runs without the package
    import ml_collections as mlc

_FEATURES = ("q", "k", "v")


def heads(config: mlc.ConfigDict) -> DINOHead:
    """The CrOC head (croc.md §6): DINO's head with a second last layer for centroids."""
    d = config.dino
    return DINOHead(
        d.out_dim, d.hidden_dim, d.bottleneck_dim, d.nlayers, d.norm_last_layer, dense_dim=config.croc.out_dim
    )


def two_view_problems(config: mlc.ConfigDict, name: str) -> list[str]:
    """What keeps `config`'s crops from CrOC's / CrIBo's input: two global views, no local
    ones, and the patch positions of the backbone's patch size (croc.md §2, cribo.md §2)."""
    crops, vit = config.crops, backbone(config.model)
    problems = []
    if crops.n_global != 2 or crops.n_local != 0:
        problems.append(
            f"{name} needs exactly 2 global crops and no local ones (crops.n_global={crops.n_global}, "
            f"crops.n_local={crops.n_local})"
        )
    if crops.patch_size != vit.patch_size:
        problems.append(
            f"crops.patch_size must equal the backbone's patch size {vit.patch_size} (patch "
            f"positions, croc.md §2), got {crops.patch_size}"
        )
    return problems


def group_problems(key: str, group: int, config: mlc.ConfigDict, process_count: int) -> list[str]:
    """[] when `group` (the setting `key`: CrOC's normalisation group, CrIBo's search group)
    divides each host's share of the batch, else the one problem to report."""
    host_batch = config.data.batch_size // process_count
    if group >= 1 and host_batch % group == 0:
        return []
    return [
        f"{key} = {group} must be a positive divisor of the per-host batch {host_batch} "
        f"(data.batch_size={config.data.batch_size} over {process_count} hosts)"
    ]


def check_config(config: mlc.ConfigDict, process_count: int) -> None:
    """Raise one `MethodConfigError` listing every inconsistent CrOC setting (called at start)."""
    c, crops = config.croc, config.crops
    grid = crops.global_size // backbone(config.model).patch_size
    problems = two_view_problems(config, "CrOC")
    if c.features not in _FEATURES:
        problems.append(f"croc.features must be one of {_FEATURES}, got {c.features!r}")
    if c.k_start < 2:
        problems.append(f"croc.k_start must be >= 2 (the merge loop runs K = k_start..2), got {c.k_start}")
    elif not 2 <= c.k_max <= c.k_start:
        problems.append(f"croc.k_max must satisfy 2 <= k_max <= k_start = {c.k_start}, got {c.k_max}")
    if c.k_start > 2 * grid * grid:
        problems.append(f"croc.k_start = {c.k_start} exceeds the 2N = {2 * grid * grid} joint tokens")
    problems += group_problems("croc.norm_group", c.norm_group, config, process_count)
    if problems:
        raise MethodConfigError("bad CrOC config: " + "; ".join(problems))


def init_aux(config: mlc.ConfigDict, rng: jax.Array) -> dict:
    """The global and the dense centre, both 0 at start (croc.md §6 "Centering"); checks the
    config first (this runs when the trainer is built)."""
    del rng
    check_config(config, jax.process_count())
    return {
        "center": jnp.zeros((1, config.dino.out_dim), jnp.float32),
        "center_dense": jnp.zeros((1, config.croc.out_dim), jnp.float32),
    }


def cluster_views(outputs: dict, positions, key, c: mlc.ConfigDict) -> CrOCClusters:
    """`croc_cluster` of the teacher's two views (croc.md §3–§4), without gradient.

    outputs: the backbone's dict on [v1; v2] (2B images, view-major); its ``c.features`` entry is
    (2B, H, 1 + N, d) with the CLS row first. positions: (B, 2, N, 2) patch centres (x, y).
    Samples are (image, head), image-major; the heads of an image share its positions."""
    feats = jax.lax.stop_gradient(outputs[c.features]).astype(jnp.float32)
    n_views_batch, num_heads, tokens, dim = feats.shape
    b, n = n_views_batch // 2, tokens - 1
    feats = jnp.moveaxis(feats.reshape(2, b, num_heads, tokens, dim), 0, 2)  # (B, H, 2, 1 + N, d)
    pos = jnp.repeat(positions.reshape(b, 2 * n, 2), num_heads, axis=0)
    return croc_cluster(
        feats[:, :, :, 1:].reshape(b * num_heads, 2 * n, dim),
        feats[:, :, :, 0].reshape(b * num_heads, 2, dim),
        pos,
        key,
        num_heads=num_heads,
        k_start=c.k_start,
        k_max=c.k_max,
        lam_pos=c.lam_pos,
        norm_group=c.norm_group,
        sinkhorn_lambda=c.sinkhorn_lambda,
        sinkhorn_iters=c.sinkhorn_iters,
        temp_r=c.temp_r,
        temp_c=c.temp_c,
        uniform_marginals=c.uniform_marginals,
    )


def joint_tokens(patch) -> jax.Array:
    """Final-LN patch maps of [v1; v2] (2B, h, w, D) → (B, 2N, D), view 1 then view 2 per image."""
    two_b, h, w, d = patch.shape
    return jnp.swapaxes(patch.reshape(2, two_b // 2, h * w, d), 0, 1).reshape(two_b // 2, 2 * h * w, d)


def group_cls_norm(cls, group: int) -> jax.Array:
    """(B,) per image: mean ‖CLS‖ over the 2·`group` view tokens of its group (croc.md §4)."""
    norms = jnp.linalg.norm(cls.astype(jnp.float32), axis=-1).reshape(2, -1, group)
    return jnp.broadcast_to(norms.mean(axis=(0, 2))[:, None], norms.shape[1:]).reshape(-1)


def centroids(assign, valid, tokens, cls, group: int) -> jax.Array:
    """ĉ (2, S, K, D): per-view centroids of `tokens` (B, 2N, D) under the hard assignment,
    L2-normalised and scaled by the group's mean CLS norm (`cls` (2B, D)); 0 at invalid slots."""
    cent = view_centroids(assign, tokens, valid)
    num_heads = valid.shape[0] // tokens.shape[0]
    scale = jnp.repeat(group_cls_norm(cls, group), num_heads)
    keep = valid[None, :, :, None]
    # Normalise a stand-in at invalid slots: the norm of a zero vector has a NaN gradient.
    unit = l2_normalize(jnp.where(keep, cent, 1.0))
    return jnp.where(keep, unit * scale[None, :, None, None], 0.0)


class DenseOut(NamedTuple):
    loss: jax.Array
    center: jax.Array
    n_valid: jax.Array  # valid (image, head, cluster) slots of the batch


def dense_objective(head, student_head, teacher_head, assign, valid, teacher, student, center, temp, config):
    """L_dense and the new dense centre (croc.md §6 "Dense loss", "Centering"; module docstring).

    teacher/student: (tokens (B, 2N, D), cls (2B, D)) of each network; assign (S, 2N, K),
    valid (S, K) from `cluster_views`. Only valid slots reach the loss, the centre and the counts.
    """
    c = config.croc
    group = c.norm_group
    cent_t = jax.lax.stop_gradient(centroids(assign, valid, *teacher, group))
    cent_s = centroids(assign, valid, *student, group)
    shape = cent_t.shape[:3]
    # The head sees a stand-in at invalid slots (a zero input can give a zero MLP output,
    # whose L2 normalisation has a NaN gradient); their outputs are masked out below.
    keep = valid[None, :, :, None]
    cent_t, cent_s = (jnp.where(keep, x, 1.0) for x in (cent_t, cent_s))
    logits_t = head.apply({"params": teacher_head}, cent_t.reshape(-1, cent_t.shape[-1]), method="dense")
    logits_t = jax.lax.stop_gradient(logits_t)
    logits_s = head.apply({"params": student_head}, cent_s.reshape(-1, cent_s.shape[-1]), method="dense")
    probs = dino.teacher_targets(logits_t, center, temp, "center").reshape(shape + (-1,))
    logprobs = jax.nn.log_softmax(logits_s / c.student_temp, axis=-1).reshape(shape + (-1,))
    ce = -jnp.sum(probs * logprobs[::-1], axis=-1)  # (2, S, K): CE(t_1, s_2) and CE(t_2, s_1)
    weights = valid.astype(jnp.float32)
    n_groups = teacher[0].shape[0] // group
    ce_g = (ce * weights).reshape(2, n_groups, -1).sum(axis=(0, 2))
    count_g = weights.reshape(n_groups, -1).sum(axis=1)
    value = jnp.mean(ce_g / (2.0 * jnp.maximum(count_g, 1.0)))
    new_center = dino.update_center(center, logits_t, c.center_momentum, jnp.tile(weights.reshape(-1), 2))
    return DenseOut(value, new_center, weights.sum())


def _backbone_outputs(vit, params, views, train: bool, rng=None) -> dict:
    rngs = {"dropout": rng} if train else None
    return vit.apply({"params": params["backbone"]}, views, train=train, rngs=rngs)


def loss(student_params, teacher_params, aux, batch, ctx):
    """L_glob + α·L_dense and the new centres (module docstring). Returns (loss, (metrics, aux))."""
    config = ctx.config
    d, c = config.dino, config.croc
    student = backbone(config.model)
    teacher = student.clone(drop_path_rate=0.0)
    head = heads(config)
    views = dino.view_major(batch["global"])
    key_cluster, key_student = jax.random.split(ctx.rng)

    out_t = jax.lax.stop_gradient(_backbone_outputs(teacher, teacher_params, views, False))
    logits_t = jax.lax.stop_gradient(head.apply({"params": teacher_params["head"]}, out_t["cls"]))
    clusters = cluster_views(out_t, batch["global_pos"], key_cluster, c)
    out_s = _backbone_outputs(student, student_params, views, True, key_student)
    logits_s = head.apply({"params": student_params["head"]}, out_s["cls"])

    temp = dino.teacher_temp(config, ctx.step)
    glob = dino.dino_loss(logits_s, logits_t, aux["center"], temp, d.student_temp, 2, d.centering)
    dense = dense_objective(
        head,
        student_params["head"],
        teacher_params["head"],
        clusters.assign,
        clusters.valid,
        (joint_tokens(out_t["patch"]), out_t["cls"]),
        (joint_tokens(out_s["patch"]), out_s["cls"]),
        aux["center_dense"],
        temp,
        config,
    )
    n_images = batch["global"].shape[0]
    metrics = {
        "loss_global": glob,
        "loss_dense": dense.loss,
        "teacher_temp": temp,
        "clusters_per_image": dense.n_valid / n_images,
        "k_mean": jnp.mean(clusters.k.astype(jnp.float32)),
    }
    new_aux = {
        "center": dino.update_center(aux["center"], logits_t, d.center_momentum),
        "center_dense": dense.center,
    }
    return glob + c.alpha * dense.loss, (metrics, new_aux)
