"""CrIBo's cross-image object matches of a frozen backbone, drawn as in the CrIBo paper's Fig. 4.

For the first ``cribo_matches.n_images`` val images, two views are cut as in training (as
`croc_clusters.two_views`: crops and flips, no colour changes) and clustered by the training
step's own op (`dense_jax.methods.cribo.cluster`: fixed K, the final-LN patch tokens, all
images one normalisation group; cribo.md §4). The objects (raw token means) of view 1 form the
bank; each image's largest valid object is the query and its match is the cosine nearest object
of view 1 of *another* image (the training search, cribo.md §5, without the cycle check). The
bank is built from the images shown rather than read from a checkpoint: the training bank keeps
each entry's stream position and object slot, not its pixels or token mask.

Writes ``cribo_matches.png``: one row per query image: its view 1, the query object highlighted,
the matched image's view 1, the matched object highlighted. Summary: ``match_cosine``, the mean
cosine between every valid view-1 object and its match; details: valid objects per image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from PIL import Image

from dense_jax.eval import features as F
from dense_jax.eval import report
from dense_jax.eval.croc_clusters import two_views
from dense_jax.methods import cribo, croc, dino
from dense_jax.ops.clustering import view_centroids


def highlight(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 image (S, S, 3) with the tokens outside the (g, g) bool `mask` darkened."""
    size = image.shape[:2][::-1]
    up = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0
    return np.where(up[..., None], image, (0.25 * image).astype(np.uint8))


def matches(objects: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image, object) index (B, K, 2) and cosine (B, K) of each object's nearest valid object
    (cosine) in another image; objects (B, K, D), valid (B, K)."""
    b, k, _ = objects.shape
    unit = objects / np.maximum(np.linalg.norm(objects, axis=-1, keepdims=True), 1e-12)
    sims = np.einsum("akd,bld->akbl", unit, unit)
    other = valid[None, None] & ~np.eye(b, dtype=bool)[:, None, :, None]
    sims = np.where(other, sims, -np.inf).reshape(b, k, b * k)
    best = sims.argmax(-1)
    return np.stack([best // k, best % k], -1), np.take_along_axis(sims, best[..., None], -1)[..., 0]


def run(ctx: F.EvalContext) -> dict:
    cfg, inp = ctx.config.cribo_matches, ctx.config.input
    source = ctx.source(ctx.config.data.val_split, cfg.n_images)
    patch = ctx.extractor().patch_size(cfg.view_size)
    batch = two_views(source, cfg.view_size, cfg.crop_scale, patch, ctx.config.seed)
    n_images, grid = len(batch["global"]), cfg.view_size // patch
    settings = mlc.ConfigDict(
        {"cribo": {**cfg.clustering.to_dict(), "group": n_images}, "train": {"epochs": 1}}
    )

    def objects_of(params, views, positions, key):
        tokens = croc.joint_tokens(ctx.backbone_fn(params, dino.view_major(views))["patch"]).astype(
            jnp.float32
        )
        clusters = cribo.cluster(tokens, positions, key, 0, settings)
        return view_centroids(clusters.assign, tokens, clusters.valid)[0], clusters

    objects, clusters = jax.device_get(
        jax.jit(objects_of)(
            F.on_mesh(ctx.params, ctx.mesh),
            jnp.asarray(batch["global"]),
            jnp.asarray(batch["global_pos"]),
            jax.random.key(ctx.config.seed),
        )
    )
    valid = np.asarray(clusters.valid)
    labels = np.asarray(clusters.labels)[:, : grid * grid].reshape(n_images, grid, grid)
    found, cosine = matches(np.asarray(objects), valid)
    if ctx.workdir:
        rows = []
        for b in range(n_images):
            sizes = np.where(valid[b], (labels[b][..., None] == np.arange(valid.shape[1])).sum((0, 1)), -1)
            query = int(sizes.argmax())
            other, obj = found[b, query]
            views = [report.to_uint8(batch["global"][i, 0], inp.mean, inp.std) for i in (b, other)]
            rows.append(
                [
                    views[0],
                    highlight(views[0], labels[b] == query),
                    views[1],
                    highlight(views[1], labels[other] == obj),
                ]
            )
        report.save_panels(ctx.path("cribo_matches.png"), rows, ("query", "object", "match", "matched"))
    return {
        "summary": {"match_cosine": float(cosine[valid].mean())},
        "objects_per_image": float(valid.sum(1).mean()),
        "n_images": n_images,
    }
