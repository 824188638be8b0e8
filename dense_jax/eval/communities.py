"""Community detection (CD) on top of CBFE: merge a fine foreground clustering into object
classes by Infomap on a cluster co-occurrence graph (evaluation.md §3c, NeCo/Leopart
``fully_unsup_seg.py`` ``create_matrix`` and the Infomap loop).

1. ``m``: fg-only K-means map with K_cd clusters, background pixels = K_cd (K_cd + 1 nodes).
2. Per image, co-occurrence counts of (m[p], m[p + offset]) over distances {1, 2} and 8 angles
   (skimage ``graycomatrix`` offsets, the reference's angle list with 4π/3 where 5π/4 was meant);
   the diagonal is zeroed and every row normalised to sum 1. The rows are summed over images and
   each row divided by the number of images where it was non-empty.
3. Undirected edges i < j with A[i, j] >= wt and A[j, i] >= wt, weight min(A[i, j], A[j, i]).
4. Infomap (two-level, undirected, ``markov_time``, ``preferred_number_of_modules`` = #fg
   classes), one run per seed. A cluster in no edge joins group 0 (the reference's zero fill).
   Groups are renumbered 0..G-1 (Infomap's ids are unbounded); G > #classes is an error (the
   reference's assertion, a failed trial in its Optuna search).

``infomap`` is an optional extra (``pip install 'dense_jax[cbfe]'``); only `detect` needs it
(the CBFE driver checks for it before any work).
"""

from __future__ import annotations

import numpy as np

# The reference's angles (sic: 4π/3, not 5π/4) and distances; offsets as skimage ``graycomatrix``
# rounds them: (round(sin(a)·d), round(cos(a)·d)) with halves away from zero (C ``round``).
ANGLES = (0, np.pi / 4, np.pi / 2, 3 * np.pi / 4, np.pi, 4 * np.pi / 3, 3 * np.pi / 2, 7 * np.pi / 4)
DISTANCES = (1, 2)
INFOMAP_MISSING = (
    "community detection needs the optional `infomap` package: pip install 'dense_jax[cbfe]' "
    "(or switch it off with --config.cbfe.community.enabled=False)"
)


def _round_half_away(x: float) -> int:
    return int(np.sign(x) * np.floor(abs(x) + 0.5))


def offsets(distances=DISTANCES, angles=ANGLES) -> list[tuple[int, int]]:
    """(row, col) pixel offsets of every (distance, angle) pair, as skimage computes them."""
    return [
        (_round_half_away(np.sin(a) * d), _round_half_away(np.cos(a) * d)) for d in distances for a in angles
    ]


def pair_counts(m: np.ndarray, levels: int, pairs=None) -> np.ndarray:
    """(levels, levels) counts of (m[r, c], m[r + dr, c + dc]) summed over the offsets, i.e.
    skimage ``graycomatrix(m, distances, angles, levels).sum((2, 3))``."""
    h, w = m.shape
    counts = np.zeros((levels, levels), np.int64)
    for dr, dc in offsets() if pairs is None else pairs:
        rows, cols = slice(max(0, -dr), min(h, h - dr)), slice(max(0, -dc), min(w, w - dc))
        src = m[rows, cols]
        dst = m[rows.start + dr : rows.stop + dr, cols.start + dc : cols.stop + dc]
        counts += np.bincount((src * levels + dst).ravel(), minlength=levels * levels).reshape(levels, levels)
    return counts


def cooccurrence(maps: np.ndarray, levels: int) -> np.ndarray:
    """Row-stochastic co-occurrence matrix of (N, h, w) cluster maps (module docstring step 2)."""
    total = np.zeros((levels, levels))
    appearances = np.zeros(levels)
    for m in maps:
        counts = pair_counts(np.asarray(m, np.int64), levels)
        np.fill_diagonal(counts, 0)
        rows = counts.sum(1)
        total += counts / np.maximum(rows, 1)[:, None]
        appearances += rows > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(total / appearances[:, None])


def edges(adjacency: np.ndarray, weight_threshold: float) -> list[tuple[int, int, float]]:
    """Undirected edges (i < j) where both directions reach ``weight_threshold`` (step 3)."""
    a = np.asarray(adjacency)
    both = (a >= weight_threshold) & (a.T >= weight_threshold)
    i, j = np.nonzero(np.triu(both, k=1))
    return [(int(s), int(t), float(min(a[s, t], a[t, s]))) for s, t in zip(i, j)]


def require_infomap():
    """The ``infomap`` module, or one ImportError saying how to install it."""
    try:
        import infomap
    except ImportError as e:
        raise ImportError(INFOMAP_MISSING) from e
    return infomap


def detect(graph_edges, n_nodes: int, seed: int, markov_time: float, preferred_modules: int) -> np.ndarray:
    """Infomap's two-level module id per node (0 for nodes in no edge), with the reference's options
    (undirected, two-level, ``markov_time``, ``preferred_number_of_modules``) through the
    ``infomap.run`` entry point of infomap >= 2.16."""
    result = require_infomap().run(
        graph_edges,
        seed=seed,
        two_level=True,
        directed=False,
        markov_time=markov_time,
        preferred_number_of_modules=preferred_modules,
        silent=True,
    )
    module = np.zeros(n_nodes, np.int64)
    for node, mod in result.modules().items():
        module[node] = mod
    return module


def compact(module: np.ndarray, max_groups: int) -> np.ndarray:
    """Renumbers node groups to 0..G-1 (order of first id); more than ``max_groups`` is an error."""
    ids, dense = np.unique(module, return_inverse=True)
    if len(ids) > max_groups:
        raise ValueError(
            f"community detection found {len(ids)} groups (Infomap modules plus unlinked clusters), more "
            f"than the {max_groups} classes it is scored against; lower cbfe.community.markov_time or "
            "raise cbfe.community.weight_threshold (the reference fails such a run)"
        )
    return dense.reshape(module.shape)


def summarise(scores) -> dict:
    """Mean ± population std (the reference's ``np.std``) and best over the Infomap seeds."""
    s = np.asarray(scores, np.float64)
    return {"mean": float(s.mean()), "std": float(s.std()), "best": float(s.max()), "per_seed": s.tolist()}
