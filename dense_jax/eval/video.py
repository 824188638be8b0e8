"""DAVIS-2017 semi-supervised video object segmentation by label propagation (evaluation.md §4).

DINO's ``eval_video_segmentation.py``: frames squashed to th × tw (short side 480, long side
floored to a multiple of 64), last-layer normed patch features (CLS dropped), the first frame's
palette mask resized nearest to the patch grid and one-hot encoded. Each later frame t takes
its context = frame 0 (GT) + the 7 most recent frames (their soft propagated masks); affinities
exp(<f̂_t, f̂_src> / 0.1) are restricted to |Δi|, |Δj| ≤ 12 on the patch grid, only the top-5
values over all context patches are kept per target patch (ties at the 5th value kept, as
``aff < min(topk)`` zeroing), normalised to sum 1, and the context masks are averaged with these
weights. The soft mask is upsampled bilinearly ×P, min-max normalised per channel (channels
with max 0 untouched), argmaxed, then resized nearest to the original size. J and F come from
``dense_jax.eval.metrics`` per object (ids 1..N of frame 0), first and last frames excluded,
void (255) pixels ignored; J&F = (J-mean + F-mean) / 2 over all objects.

Static shapes: the context is a fixed 1 + n_last_frames slots with a validity mask, the
per-frame step is jitted once per resolution and keeps the queue on device. The frame resize
is bilinear without antialias (OpenCV INTER_LINEAR, as the reference).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from dense_jax.data.sources import Scenes
from dense_jax.eval import features as F
from dense_jax.eval import metrics, report
from dense_jax.ops.resize import bilinear_upsample


# ----------------------------------------------------------------------------- sources
def open_videos(ctx: F.EvalContext):
    """The val videos: DAVIS-2017 (``dense_jax.data.segmentation.DAVIS2017``) or, on the
    built-in scenes, ``sources.Scenes`` videos of 8 panning 96×128 frames; the first
    ``data.limit_val`` when > 0 (scenes: else 3)."""
    data = ctx.config.data
    if data.name == "scenes":
        return Scenes("val", data.limit_val or 3, (96, 128), frames=8, style=data.scenes_style)
    return ctx.source(data.val_split, data.limit_val)


# ----------------------------------------------------------------------------- propagation
def target_size(h: int, w: int, short: int, multiple: int) -> tuple[int, int]:
    """DINO's resize: short side -> ``short``, long side floored to a multiple (854 -> 832)."""
    if h > w:
        return int((short * h / w) // multiple * multiple), short
    return short, int((short * w / h) // multiple * multiple)


def neighbourhood(h: int, w: int, radius: int) -> np.ndarray:
    """(hw, hw) bool: |Δi| <= radius and |Δj| <= radius on the h × w patch grid."""
    i, j = np.divmod(np.arange(h * w), w)
    return (np.abs(i[:, None] - i[None]) <= radius) & (np.abs(j[:, None] - j[None]) <= radius)


@functools.partial(jax.jit, static_argnames=("topk", "temperature"))
def propagate(feat, ctx_feats, ctx_segs, ctx_valid, near, topk: int, temperature: float):
    """Soft mask (hw, C) of a target frame: its context masks averaged with the top-k local
    affinities, normalised to sum 1 (§4).

    feat (hw, D) and ctx_feats (n, hw, D) unit-norm; ctx_segs (n, hw, C); ctx_valid (n,);
    near (hw_src, hw_tgt) neighbourhood mask.
    """
    aff = jnp.exp(
        jnp.einsum("nsd,td->nst", ctx_feats, feat, precision=jax.lax.Precision.HIGHEST) / temperature
    )
    aff = aff * near[None] * ctx_valid[:, None, None]
    aff = aff.reshape(-1, feat.shape[0])  # (n·hw sources, hw targets)
    kth = jax.lax.top_k(aff.T, topk)[0][:, -1]
    aff = jnp.where(aff >= kth[None, :], aff, 0.0)
    aff = aff / jnp.sum(aff, axis=0, keepdims=True)
    return jnp.einsum(
        "st,sc->tc", aff, ctx_segs.reshape(-1, ctx_segs.shape[-1]), precision=jax.lax.Precision.HIGHEST
    )


@functools.partial(jax.jit, static_argnames=("grid", "out_hw"))
def to_labels(seg, grid: tuple[int, int], out_hw: tuple[int, int]):
    """Soft mask (hw, C) -> (th, tw) ids: bilinear ×P, per-channel min-max, argmax."""
    up = bilinear_upsample(seg.reshape((1,) + grid + (seg.shape[-1],)), out_hw)[0]
    lo, hi = up.min((0, 1)), up.max((0, 1))
    norm = jnp.where(hi > 0, (up - lo) / jnp.where(hi - lo > 0, hi - lo, 1.0), up)
    return jnp.argmax(norm, axis=-1)


@functools.partial(jax.jit, static_argnames=("out_hw",))
def _resize_frames(frames, out_hw, mean, std):
    x = frames.astype(jnp.float32) / 255.0
    x = jax.image.resize(x, (x.shape[0],) + out_hw + (3,), "bilinear", antialias=False)
    return (x - mean) / std


def segment_video(ctx: F.EvalContext, frames: np.ndarray, first_mask: np.ndarray) -> np.ndarray:
    """Propagated ids (T, H, W) uint8 of one video, frame 0 = its GT."""
    cfg, inp = ctx.config.davis, ctx.config.input
    extractor = ctx.extractor(("patch",))
    t_frames, h0, w0 = frames.shape[:3]
    th, tw = target_size(h0, w0, cfg.short_side, cfg.multiple)
    bs = extractor.batch_size(inp.batch_size)
    feats = []
    for start in range(0, t_frames, bs):
        chunk = frames[start : start + bs]
        x = _resize_frames(
            jnp.asarray(F.pad_batch({"x": chunk, "valid": np.ones(len(chunk), bool)}, bs)["x"]),
            (th, tw),
            jnp.asarray(inp.mean, jnp.float32),
            jnp.asarray(inp.std, jnp.float32),
        )
        feats.append(extractor(x)["patch"][: len(chunk)])
    feats = jnp.concatenate(feats)
    gh, gw = feats.shape[1:3]
    patch = th // gh
    feats = feats.reshape(t_frames, gh * gw, -1)
    feats = feats / jnp.maximum(jnp.linalg.norm(feats, axis=-1, keepdims=True), 1e-12)

    small = np.asarray(
        Image.fromarray(first_mask).resize((tw // patch, th // patch), Image.Resampling.NEAREST)
    )
    n_ids = min(int(small[small != 255].max(initial=0)) + 1, cfg.max_ids)
    first = jax.nn.one_hot(jnp.asarray(small.reshape(-1).astype(np.int32)), cfg.max_ids)
    first = first * (jnp.arange(cfg.max_ids) < n_ids)
    near = jnp.asarray(neighbourhood(gh, gw, cfg.neighborhood), jnp.float32)
    n_ctx = 1 + cfg.n_last_frames
    ctx_feats = jnp.zeros((n_ctx,) + feats.shape[1:]).at[0].set(feats[0])
    ctx_segs = jnp.zeros((n_ctx, gh * gw, cfg.max_ids)).at[0].set(first)
    valid = np.zeros(n_ctx, np.float32)
    valid[0] = 1
    preds = []
    for t in range(1, t_frames):
        seg = propagate(feats[t], ctx_feats, ctx_segs, jnp.asarray(valid), near, cfg.topk, cfg.temperature)
        slot = 1 + (t - 1) % cfg.n_last_frames  # FIFO of the most recent frames
        ctx_feats, ctx_segs = ctx_feats.at[slot].set(feats[t]), ctx_segs.at[slot].set(seg)
        valid[slot] = 1
        preds.append(to_labels(seg, (gh, gw), (th, tw)))
    out = [np.asarray(first_mask)]
    for p in jax.device_get(preds):
        out.append(np.asarray(Image.fromarray(p.astype(np.uint8)).resize((w0, h0), Image.Resampling.NEAREST)))
    return np.stack(out)


def j_and_f(pred: np.ndarray, gt: np.ndarray, bound_th: float) -> tuple[list, list]:
    """Per-object mean J and F (davis2017-evaluation, semi-supervised): objects 1..N of
    frame 0, first and last frames excluded, void (255) ignored."""
    n_obj = int(gt[0][gt[0] != 255].max(initial=0))
    frames = slice(1, len(gt) - 1)
    void = gt[frames] == 255
    js, fs = [], []
    for obj in range(1, n_obj + 1):
        g, p = gt[frames] == obj, pred[frames] == obj
        js.append(float(np.nanmean(metrics.region_similarity(g, p, void))))
        fs.append(float(np.nanmean(metrics.boundary_f_measure(g, p, void, bound_th))))
    return js, fs


def run(ctx: F.EvalContext) -> dict:
    """Label propagation on every val video; J, F and J&F over all objects (§4)."""
    cfg = ctx.config.davis
    videos = open_videos(ctx)
    all_j, all_f, per_video = [], [], {}
    for i in range(len(videos)):
        video = videos[i]
        pred = segment_video(ctx, np.asarray(video["image"]), np.asarray(video["mask"][0]))
        js, fs = j_and_f(pred, np.asarray(video["mask"]), cfg.bound_th)
        all_j += js
        all_f += fs
        per_video[str(video["id"])] = {"j": js, "f": fs}
        if ctx.workdir and cfg.save_masks:
            names = video.get("frame_ids") or [f"{t:05d}" for t in range(len(pred))]
            for name, p in zip(names, pred):
                report.save_indexed_png(ctx.path("davis", str(video["id"]), f"{name}.png"), p)
        if ctx.workdir and i == 0 and ctx.config.output.n_show:
            picks = np.linspace(0, len(pred) - 1, min(len(pred), 4)).astype(int)
            report.save_panels(
                ctx.path("davis_propagation.png"),
                [[video["image"][t], video["mask"][t], pred[t]] for t in picks],
                titles=("frame", "ground truth", "propagated"),
            )
    j_mean, f_mean = float(np.mean(all_j)), float(np.mean(all_f))
    return {
        "summary": {"j_and_f": (j_mean + f_mean) / 2, "j_mean": j_mean, "f_mean": f_mean},
        "per_video": per_video,
        "n_objects": len(all_j),
        "n_videos": len(videos),
    }
