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

Plain reference bugs fixed here (neco.md §8): one fill counter per queue (the code shares
one and reads zero rows during warm-up); all teacher outputs under stop_gradient; the log
is clamped (``config.neco.log_eps``); EMA after the optimizer step (trainer order).
Paper variants are flags: ``symmetric`` (adds the reverse cross-entropy), ``sort_distance``
(sort 1 − cos instead of cos), ``refs_from_student``, and the relaxation itself.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc

from dense_jax import methods
from dense_jax.models.heads import ProjectionMLP, l2_normalize
from dense_jax.ops.roi_align import roi_align
from dense_jax.ops.sorting import soft_sort


class NeCoHead(nn.Module):
    """Projection head (neco.md §2): D → 2048 → GELU → 2048 → GELU → 256, L2-normalised."""
    hidden_dim: int = 2048
    out_dim: int = 256
    nlayers: int = 3

    @nn.compact
    def __call__(self, x):
        return l2_normalize(ProjectionMLP(self.hidden_dim, self.out_dim, self.nlayers, name="mlp")(x))


def heads(config: mlc.ConfigDict) -> nn.Module:
    c = config.neco
    return NeCoHead(c.hidden_dim, c.out_dim, c.nlayers)


def init_aux(config: mlc.ConfigDict, rng: jax.Array) -> dict:
    """One FIFO queue of teacher tokens per global crop, with its own fill counter."""
    del rng
    c = config.neco
    n_queues = config.crops.n_global if c.queue_length else 0
    return {
        "queue": jnp.zeros((n_queues, c.queue_length, c.out_dim), jnp.float32),
        "queue_fill": jnp.zeros((n_queues,), jnp.int32),
    }


def param_groups(params):
    """Backbone vs head (neco.md §2 "Optimizer"); no-decay is decided by the optimizer."""
    return methods.param_groups(params)


def _random_subset(key, population: int, size: int) -> jax.Array:
    """`size` distinct indices of range(population) (with replacement if size > population)."""
    if size > population:
        return jax.random.randint(key, (size,), 0, population)
    return jax.lax.top_k(jax.random.uniform(key, (population,)), size)[1]


def push_queue(queue, fill, tokens, key, n_push: int):
    """Push `n_push` random rows of `tokens` (N, D) to the front of `queue` (Q, D) (§3.3)."""
    rows = tokens[_random_subset(key, tokens.shape[0], n_push)]
    queue = jnp.concatenate([rows, queue[:queue.shape[0] - n_push]], axis=0)
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
    """Soft-rank matrices (B, N, R, R) of each token's similarities to its image's refs (§3.6–7)."""
    sim = jnp.einsum("bnd,brd->bnr", l2_normalize(tokens), l2_normalize(refs),
                     precision=jax.lax.Precision.HIGHEST)
    if c.sort_distance:
        sim = 1.0 - sim
    _, perm = soft_sort(sim, network=c.network, relaxation=c.relaxation, steepness=steepness,
                        art_lambda=c.art_lambda)
    return perm


def ranking_cross_entropy(p_target, p_pred, eps: float):
    """Mean over (image, patch, reference) of −Σ_k p_target log p_pred (§3.8)."""
    return -(p_target * jnp.log(jnp.maximum(p_pred, eps))).sum(-1).mean()


def pair_loss(teacher_aligned, student_aligned, refs, c: mlc.ConfigDict):
    """Loss of one (teacher crop, student crop) pair and the teacher's rank entropy."""
    p_teacher = jax.lax.stop_gradient(rank_matrices(teacher_aligned, refs, c, c.teacher_steepness))
    p_student = rank_matrices(student_aligned, refs, c, c.student_steepness)
    loss = ranking_cross_entropy(p_teacher, p_student, c.log_eps)
    if c.symmetric:
        loss = loss + ranking_cross_entropy(p_student, p_teacher, c.log_eps)
    return loss, ranking_cross_entropy(p_teacher, p_teacher, c.log_eps)


def _align(maps, boxes, patch_size: int, out: int):
    """ROI-align token maps (B, h, w, D) over pixel boxes (B, 4) of the same view."""
    return roi_align(maps, boxes / patch_size, output_size=out, sampling_ratio=-1, aligned=True)


def neco_loss(teacher_globals, student_views, gc, all_boxes, aux, key, config: mlc.ConfigDict,
              patch_size: int):
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
    out = c.roi_size
    n_refs = out * out
    key_push, key_pairs = jax.random.split(key)
    queue, fill = aux["queue"], aux["queue_fill"]
    if c.queue_length:
        push_keys = jax.random.split(key_push, len(teacher_globals))
        n_push = min(c.queue_push_per_image * batch, c.queue_length)
        pushed = [push_queue(queue[i], fill[i], jax.lax.stop_gradient(t.reshape(-1, t.shape[-1])),
                             push_keys[i], n_push) for i, t in enumerate(teacher_globals)]
        queue = jnp.stack([q for q, _ in pushed])
        fill = jnp.stack([f for _, f in pushed])

    losses, entropies = [], []
    pairs = [(ci, v) for ci in range(len(teacher_globals)) for v in range(len(student_views)) if v != ci]
    pair_keys = jax.random.split(key_pairs, len(pairs))
    for (ci, v), pair_key in zip(pairs, pair_keys):
        t_aligned = _align(jax.lax.stop_gradient(teacher_globals[ci]), gc[:, ci, v], patch_size, out)
        s_aligned = _align(student_views[v], all_boxes[:, v, ci], patch_size, out)
        t_aligned = t_aligned.reshape(batch, n_refs, -1)
        s_aligned = s_aligned.reshape(batch, n_refs, -1)
        if c.refs_from_student:
            refs = batch_references(jax.lax.stop_gradient(s_aligned), pair_key, n_refs)
        elif c.queue_length:
            refs = queue_references(queue[ci], fill[ci], pair_key, batch, n_refs)
        else:
            refs = batch_references(t_aligned, pair_key, n_refs)
        loss, entropy = pair_loss(t_aligned, s_aligned, jax.lax.stop_gradient(refs), c)
        losses.append(loss)
        entropies.append(entropy)
    loss = jnp.mean(jnp.stack(losses))
    entropy = jnp.mean(jnp.stack(entropies))
    metrics = {"loss": loss, "kl": loss - entropy, "teacher_rank_entropy": entropy,
               "queue_fill": jnp.min(fill) if c.queue_length else jnp.zeros((), jnp.int32)}
    return loss, metrics, {"queue": queue, "queue_fill": fill}


def _project(backbone, head, params, images, train: bool, rng):
    """Backbone normed patch tokens → head, as (B, h, w, out_dim) maps."""
    rngs = {"dropout": rng} if train else None
    feats = backbone.apply({"params": params["backbone"]}, images, train=train, rngs=rngs)["patch"]
    return head.apply({"params": params["head"]}, feats)


def loss(student_params, teacher_params, aux, batch, rng, step, config: mlc.ConfigDict):
    """Trainer entry point (methods/__init__.py interface)."""
    del step
    student = methods.backbone(config)
    teacher = student.clone(drop_path_rate=0.0)
    head = heads(config)
    globals_, locals_ = batch["global"], batch.get("local")
    n_global = globals_.shape[1]
    key_g, key_l, key_loss = jax.random.split(rng, 3)

    def views(x):  # (B, n, S, S, 3) -> (n·B, S, S, 3), view-major as the references
        return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])

    def split(maps, n):
        return list(maps.reshape((n, -1) + maps.shape[1:]))

    teacher_maps = split(jax.lax.stop_gradient(
        _project(teacher, head, teacher_params, views(globals_), False, None)), n_global)
    student_maps = split(_project(student, head, student_params, views(globals_), True, key_g), n_global)
    if locals_ is not None:
        student_maps += split(_project(student, head, student_params, views(locals_), True, key_l),
                              locals_.shape[1])
    value, metrics, new_aux = neco_loss(teacher_maps, student_maps, batch["gc"], batch["all"], aux,
                                        key_loss, config, student.patch_size)
    return value, (metrics, new_aux)
