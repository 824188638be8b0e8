"""CrOC's joint-view clusters of a frozen backbone, drawn per head (the CrOC paper's Fig. A1).

For the first ``croc_clusters.n_images`` images of the val split, two views are cut as in CrOC
training (random resized crop of scale ``crop_scale`` to ``view_size``², flip p .5; no colour
changes, so the panels show the image), with their patch positions in the original image
(croc.md §2). The backbone's last-block features (``clustering.features``) of both views go
through the training step's own clustering (`dense_jax.methods.croc.cluster_views`,
croc.md §4) with all the images as one normalisation group. Each token is coloured by the
cluster of its largest assignment (cluster k in palette colour k + 1, so none is black); a
cluster present in only one view (invalid, not used by the dense loss) is drawn white.

Writes ``croc_clusters.png``: one row per image, columns view 1, view 2, then view 1 | view 2
of every head. Summary: ``valid_share``, the share of the chosen K* clusters that are present
in both views (mean over images and heads); details: the mean K* and valid clusters per head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from PIL import Image

from dense_jax.data.palette import colourise
from dense_jax.data.transforms import MultiCropSpec, MultiCropTransform
from dense_jax.eval import features as F
from dense_jax.eval import report
from dense_jax.methods import croc, dino

INVALID = 255  # palette white


def two_views(source, view_size: int, crop_scale, patch_size: int, seed: int) -> dict:
    """{"global": (B, 2, S, S, 3) normalised views, "global_pos": (B, 2, N, 2)} of every item."""
    spec = MultiCropSpec(
        global_size=view_size,
        global_scale=tuple(crop_scale),
        jitter_p=0.0,
        gray_p=0.0,
        global_blur_p=(0.0, 0.0),
        global_solarize_p=(0.0, 0.0),
        patch_size=patch_size,
    )
    transform, rng = MultiCropTransform(spec), np.random.default_rng(seed)
    items = [transform.random_map(source[i], rng) for i in range(len(source))]
    return {k: np.stack([it[k] for it in items]) for k in ("global", "global_pos")}


def token_labels(assign, valid) -> np.ndarray:
    """(S, 2N) palette id of each token: 1 + the cluster of its largest assignment, `INVALID`
    for a cluster that is not valid."""
    ids = np.argmax(assign, axis=-1)
    ok = np.take_along_axis(np.asarray(valid), ids, axis=1)
    return np.where(ok, ids + 1, INVALID)


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint8 image (S, S, 3) blended with the colourised (g, g) label map (nearest-upsampled)."""
    size = image.shape[:2][::-1]
    colours = np.asarray(Image.fromarray(colourise(labels)).resize(size, Image.Resampling.NEAREST))
    return (0.4 * image + 0.6 * colours).astype(np.uint8)


def run(ctx: F.EvalContext) -> dict:
    cfg, inp = ctx.config.croc_clusters, ctx.config.input
    source = ctx.source(ctx.config.data.val_split, cfg.n_images)
    patch = ctx.extractor().patch_size(cfg.view_size)
    batch = two_views(source, cfg.view_size, cfg.crop_scale, patch, ctx.config.seed)
    n_images, grid = len(batch["global"]), cfg.view_size // patch
    clustering = mlc.ConfigDict({**cfg.clustering.to_dict(), "norm_group": n_images})

    def cluster(params, views, positions, key):
        return croc.cluster_views(ctx.backbone_fn(params, dino.view_major(views)), positions, key, clustering)

    result = jax.device_get(
        jax.jit(cluster)(
            F.on_mesh(ctx.params, ctx.mesh),
            jnp.asarray(batch["global"]),
            jnp.asarray(batch["global_pos"]),
            jax.random.key(ctx.config.seed),
        )
    )
    num_heads = result.valid.shape[0] // n_images
    labels = token_labels(result.assign, result.valid).reshape(n_images, num_heads, 2, grid, grid)
    valid_per_head = result.valid.sum(-1).reshape(n_images, num_heads)
    k = result.k.reshape(n_images, num_heads)
    if ctx.workdir:
        rows = []
        for b in range(n_images):
            views = [report.to_uint8(batch["global"][b, v], inp.mean, inp.std) for v in range(2)]
            rows.append(
                views + [overlay(views[v], labels[b, h, v]) for h in range(num_heads) for v in range(2)]
            )
        titles = ("view 1", "view 2") + tuple(
            f"head {h} v{v + 1}" for h in range(num_heads) for v in range(2)
        )
        report.save_panels(ctx.path("croc_clusters.png"), rows, titles)
    return {
        "summary": {"valid_share": float(np.mean(valid_per_head / k))},
        "k_mean": float(k.mean()),
        "valid_per_head_mean": float(valid_per_head.mean()),
        "n_images": n_images,
    }
