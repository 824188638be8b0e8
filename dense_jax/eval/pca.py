"""PCA colours of a frozen backbone's patch tokens, and patches sorted by similarity to a query
(any backbone; the picture the DINO/NeCo papers show of dense features).

The first ``pca.n_images`` val images at ``input.size``: the first three principal components of
all their last-block patch tokens together become red, green and blue (`dense_jax.viz.pca_rgb`).
``pca.png``: image | PCA colours | ground truth per row. ``sorted_neighbours.png``: four query
tokens of image 0, the similarity map over image 1 and image 1's patches ranked by cosine
similarity (most similar first, then the least similar): the ranking NeCo's loss makes
consistent between teacher and student. Summary: ``explained_variance`` (share of the token
variance in the three components) and ``nn_label_agreement`` (share of labelled tokens whose
most similar token in another image has the same label, labels at the token grid).
"""

from __future__ import annotations

from dense_jax import viz
from dense_jax.eval import features as F
from dense_jax.eval import report


def run(ctx: F.EvalContext) -> dict:
    cfg, data, inp = ctx.config.pca, ctx.config.data, ctx.config.input
    patch_size = ctx.extractor().patch_size(inp.size)
    grid = inp.size // patch_size
    val = ctx.dense(data.val_split, size=inp.size, label_size=grid, limit=cfg.n_images)
    rgb, share = viz.pca_rgb(val["patch"])
    agreement = viz.nearest_label_agreement(val["patch"], val["labels"], data.ignore_index)
    shown = val["show"]
    if ctx.workdir and len(shown):
        rows = [[img, colours, gt] for img, colours, gt in zip(shown, rgb, val["labels"])]
        report.save_panels(ctx.path("pca.png"), rows, titles=("image", "PCA of patches", "ground truth"))
        if len(shown) >= 2:
            q = (grid // 4, 3 * grid // 4)
            queries = [(r, c) for r in q for c in q]
            rows = viz.sorted_neighbour_rows(shown, val["patch"], queries, patch_size, cfg.n_neighbours)
            n = cfg.n_neighbours
            titles = ("query (image 0)", "similarity") + ("most similar",) * n + ("least similar",) * n
            report.save_panels(ctx.path("sorted_neighbours.png"), rows, titles)
    return {
        "summary": {"explained_variance": share, "nn_label_agreement": agreement},
        "n_images": int(len(val["patch"])),
        "grid": grid,
    }
