"""NeCo: patch neighbour consistency by differentiable sorting (neco.md §1–§3, §8).

Per image the pipeline gives 2 global + n local crops and the box records ``gc``
(B, 2, V, 4) / ``all`` (B, V, 2, 4) of every (global c, view v) overlap (neco.md §1). A step:

1. teacher (backbone + its own head) on the globals; student on every crop; head output is
   L2-normalised 256-d tokens per patch;
2. the teacher's raw global-crop tokens are pushed into a FIFO queue per global crop
   (before the loss, as the code does);
3. for each of the 2·(V−1) pairs (c, v ≠ c) the teacher map c and the student map v are
   ROI-aligned onto their shared region (7×7), each image draws 49 references (from the
   queue of crop c, or from the shuffled aligned teacher tokens of the batch), cosine
   similarities of aligned patches to references are soft-sorted (bitonic, cauchy, β=100),
   and the teacher's rank matrices supervise the student's: −Σ_k P_t log P_s averaged over
   images, patches and references (§3.8);
4. the loss is the mean over pairs (§3.9).

The pairs are batched: each token map is ROI-aligned once over the boxes of all its pairs,
and the pairs' similarity rows go through one sort call per network (student, teacher).
The teacher head is drawn independently of the student's at init (`init_teacher`, §2).

Plain reference bugs fixed here (neco.md §8): one fill counter per queue (the code shares
one and reads zero rows during warm-up); all teacher outputs under stop_gradient; the log
is clamped (``config.neco.log_eps``); EMA after the optimizer step (trainer order).
Paper variants are flags: ``symmetric`` (adds the reverse cross-entropy), ``sort_distance``
(sort 1 − cos instead of cos), ``refs_from_student``, and the relaxation itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dense_jax.methods.dino import view_major
from dense_jax.models.build import backbone, init_head
from dense_jax.models.build import param_groups as default_param_groups
from dense_jax.models.heads import ProjectionMLP, l2_normalize
from dense_jax.ops.roi_align import roi_align
from dense_jax.ops.sorting import soft_sort

if TYPE_CHECKING:  # configs are ml_collections files; the step runs without the package
    import ml_collections as mlc


class NeCoHead(nn.Module):
    """Projection head (neco.md §2): D → 2048 → GELU → 2048 → GELU → 256, L2-normalised."""

    hidden_dim: int = 2048
    out_dim: int = 256
    nlayers: int = 3
    dtype: str = "float32"  # the backbone's compute dtype (config.model.dtype)

    @nn.compact
    def __call__(self, x):
        return l2_normalize(
            ProjectionMLP(self.hidden_dim, self.out_dim, self.nlayers, self.dtype, name="mlp")(x)
        )


def heads(config: mlc.ConfigDict) -> nn.Module:
    c = config.neco
    return NeCoHead(c.hidden_dim, c.out_dim, c.nlayers, config.model.dtype)


def init_aux(config: mlc.ConfigDict, rng: jax.Array) -> dict:
    """One FIFO queue of teacher tokens per global crop, with its own fill counter; nothing
    for batch references (``queue_length=0``: orbax cannot save zero-size arrays)."""
    del rng
    c = config.neco
    if not c.queue_length:
        return {}
    return {
        "queue": jnp.zeros((config.crops.n_global, c.queue_length, c.out_dim), jnp.float32),
        "queue_fill": jnp.zeros((config.crops.n_global,), jnp.int32),
    }


def init_teacher(config: mlc.ConfigDict, student_params, rng: jax.Array):
    """Teacher at step 0: the student's backbone and, as the code does, a head drawn
    independently at random (neco.md §2 "Projection head"; §8 "Teacher init");
    ``neco.independent_teacher_head=False`` copies the student's head instead."""
    teacher = jax.tree.map(jnp.copy, student_params)
    if config.neco.independent_teacher_head:
        teacher["head"] = nn.unbox(init_head(config, heads(config), rng)[0])
    return teacher


def param_groups(params):
    """Backbone vs head, which take their own learning rates (``optim.lr_scale``; neco.md §2
    "Optimizer"; biases and 1-D params are left undecayed by the optimizer). ``mask_token``
    (DINOv2 weights) gets no gradient in NeCo and torch never steps it, so it is the group
    "unused" (lr scale 0): no weight decay either."""
    labels = default_param_groups(params)
    if "mask_token" in params["backbone"]:
        labels["backbone"]["mask_token"] = "unused"
    return labels


def _random_subset(key, population: int, size: int) -> jax.Array:
    """`size` distinct indices of range(population) (with replacement if size > population)."""
    if size > population:
        return jax.random.randint(key, (size,), 0, population)
    return jax.lax.top_k(jax.random.uniform(key, (population,)), size)[1]


def push_queue(queue, fill, tokens, key, n_push: int):
    """Push `n_push` random rows of `tokens` (N, D) to the front of `queue` (Q, D) (§3.3)."""
    rows = tokens[_random_subset(key, tokens.shape[0], n_push)]
    queue = jnp.concatenate([rows, queue[: queue.shape[0] - n_push]], axis=0)
    return queue, jnp.minimum(fill + n_push, queue.shape[0])


def queue_references(queue, fill, key, batch: int, n_refs: int):
    """(B, R, D) references: B·R distinct queue slots, folded onto the filled part (§3.5)."""
    idx = _random_subset(key, queue.shape[0], batch * n_refs) % jnp.maximum(fill, 1)
    return queue[idx].reshape(batch, n_refs, queue.shape[-1])


def batch_references(aligned, key, n_refs: int):
    """(B, R, D) references dealt from the shuffled aligned tokens of the whole batch (§3.5)."""
    flat = aligned.reshape(-1, aligned.shape[-1])
    flat = flat[_random_subset(key, flat.shape[0], aligned.shape[0] * n_refs)]
    return flat.reshape(aligned.shape[0], n_refs, aligned.shape[-1])


def rank_matrices(tokens, refs, c: mlc.ConfigDict, steepness: float):
    """Soft-rank matrices (..., N, R, R) of each token's similarities to its image's refs
    (..., R, D) (§3.6–7)."""
    sim = jnp.einsum(
        "...nd,...rd->...nr", l2_normalize(tokens), l2_normalize(refs), precision=jax.lax.Precision.HIGHEST
    )
    if c.sort_distance:
        sim = 1.0 - sim
    _, perm = soft_sort(
        sim,
        network=c.network,
        relaxation=c.relaxation,
        steepness=steepness,
        art_lambda=c.art_lambda,
        row_chunk=c.sort_row_chunk or None,
    )
    return perm


def ranking_cross_entropy(p_target, p_pred, eps: float):
    """Mean over (pair, image, patch, reference) of −Σ_k p_target log p_pred (§3.8–9)."""
    return -(p_target * jnp.log(jnp.maximum(p_pred, eps))).sum(-1).mean()


def pair_loss(teacher_aligned, student_aligned, refs, c: mlc.ConfigDict):
    """Loss of (a stack of) (teacher crop, student crop) pairs and the teacher's rank entropy.

    All pairs have the same size, so the mean over a stack is the mean of the pair losses.
    """
    p_teacher = jax.lax.stop_gradient(rank_matrices(teacher_aligned, refs, c, c.teacher_steepness))
    p_student = rank_matrices(student_aligned, refs, c, c.student_steepness)
    loss = ranking_cross_entropy(p_teacher, p_student, c.log_eps)
    if c.symmetric:
        loss = loss + ranking_cross_entropy(p_student, p_teacher, c.log_eps)
    return loss, ranking_cross_entropy(p_teacher, p_teacher, c.log_eps)


def _align(maps, boxes, patch_size: int, out: int):
    """ROI-align token maps (B, h, w, D) over pixel boxes (B, K, 4) of the same view →
    (B, K, out², D)."""
    aligned = roi_align(maps, boxes / patch_size, output_size=out, sampling_ratio=-1, aligned=True)
    return aligned.reshape(aligned.shape[:2] + (out * out, aligned.shape[-1]))


def crop_pairs(n_global: int, n_views: int) -> list[tuple[int, int]]:
    """The (teacher global crop c, student view v ≠ c) pairs, c-major (§1 "Pairing")."""
    return [(c, v) for c in range(n_global) for v in range(n_views) if v != c]


def align_pairs(pairs, teacher_globals, student_views, gc, all_boxes, patch_size: int, out: int):
    """(T, S), each (P, B, out², D): for every pair (c, v) the teacher map c over
    ``gc[:, c, v]`` and the student map v over ``all[:, v, c]`` (§1 "Pairing"). Each map is
    ROI-aligned once, over the boxes of all its pairs."""
    t_views = [[v for c, v in pairs if c == ci] for ci in range(len(teacher_globals))]
    s_crops = [[c for c, v in pairs if v == vi] for vi in range(len(student_views))]
    t_maps = [
        _align(m, gc[:, ci, vs], patch_size, out) for ci, (m, vs) in enumerate(zip(teacher_globals, t_views))
    ]
    s_maps = [
        _align(m, all_boxes[:, vi, cs], patch_size, out)
        for vi, (m, cs) in enumerate(zip(student_views, s_crops))
    ]
    teacher = jnp.stack([t_maps[c][:, t_views[c].index(v)] for c, v in pairs])
    student = jnp.stack([s_maps[v][:, s_crops[v].index(c)] for c, v in pairs])
    return teacher, student


def neco_loss(
    teacher_globals, student_views, gc, all_boxes, aux, key, config: mlc.ConfigDict, patch_size: int
):
    """The NeCo objective from projected token maps (neco.md §3).

    Args:
      teacher_globals: list of n_global maps (B, h, w, D), L2-normalised teacher tokens.
      student_views: list of all V maps (globals first), L2-normalised student tokens.
      gc, all_boxes: box records (B, n_global, V, 4) and (B, V, n_global, 4) in pixels.
      aux: the queue state of `init_aux`.
      patch_size: backbone patch size (pixels per token), to map boxes onto token maps.
    Returns:
      (loss, metrics, new_aux).
    """
    c = config.neco
    batch = teacher_globals[0].shape[0]
    n_refs = c.roi_size**2
    teacher_globals = [jax.lax.stop_gradient(t) for t in teacher_globals]
    key_push, key_pairs = jax.random.split(key)
    if c.queue_length:
        queue, fill = aux["queue"], aux["queue_fill"]
        push_keys = jax.random.split(key_push, len(teacher_globals))
        n_push = min(c.queue_push_per_image * batch, c.queue_length)
        pushed = [
            push_queue(queue[i], fill[i], t.reshape(-1, t.shape[-1]), push_keys[i], n_push)
            for i, t in enumerate(teacher_globals)
        ]
        queue = jnp.stack([q for q, _ in pushed])
        fill = jnp.stack([f for _, f in pushed])

    pairs = crop_pairs(len(teacher_globals), len(student_views))
    t_aligned, s_aligned = align_pairs(
        pairs, teacher_globals, student_views, gc, all_boxes, patch_size, c.roi_size
    )
    refs = []
    for p, ((ci, _), pair_key) in enumerate(zip(pairs, jax.random.split(key_pairs, len(pairs)))):
        if c.refs_from_student:
            refs.append(batch_references(jax.lax.stop_gradient(s_aligned[p]), pair_key, n_refs))
        elif c.queue_length:
            refs.append(queue_references(queue[ci], fill[ci], pair_key, batch, n_refs))
        else:
            refs.append(batch_references(t_aligned[p], pair_key, n_refs))
    loss, entropy = pair_loss(t_aligned, s_aligned, jax.lax.stop_gradient(jnp.stack(refs)), c)
    metrics = {"loss": loss, "kl": loss - entropy, "teacher_rank_entropy": entropy}
    if not c.queue_length:
        return loss, metrics, {}
    return loss, {**metrics, "queue_fill": jnp.min(fill)}, {"queue": queue, "queue_fill": fill}


def _project(backbone, head, params, images, train: bool, rng):
    """Backbone normed patch tokens → head, as (B, h, w, out_dim) maps."""
    rngs = {"dropout": rng} if train else None
    feats = backbone.apply({"params": params["backbone"]}, images, train=train, rngs=rngs)["patch"]
    return head.apply({"params": params["head"]}, feats)


def loss(student_params, teacher_params, aux, batch, ctx):
    """Trainer entry point (methods/__init__.py interface)."""
    config, rng = ctx.config, ctx.rng
    student = backbone(config.model)
    teacher = student.clone(drop_path_rate=0.0)
    head = heads(config)
    globals_, locals_ = batch["global"], batch.get("local")
    n_global = globals_.shape[1]
    key_g, key_l, key_loss = jax.random.split(rng, 3)

    def split(maps, n):
        return list(maps.reshape((n, -1) + maps.shape[1:]))

    teacher_maps = split(
        jax.lax.stop_gradient(_project(teacher, head, teacher_params, view_major(globals_), False, None)),
        n_global,
    )
    student_maps = split(_project(student, head, student_params, view_major(globals_), True, key_g), n_global)
    if locals_ is not None:
        student_maps += split(
            _project(student, head, student_params, view_major(locals_), True, key_l), locals_.shape[1]
        )
    value, metrics, new_aux = neco_loss(
        teacher_maps, student_maps, batch["gc"], batch["all"], aux, key_loss, config, student.patch_size
    )
    return value, (metrics, new_aux)
