"""CrOC's joint-view clustering (teacher side, no gradient) as one static-shape, jit-compiled op.

What it computes (croc.md §4, in the released code's form; the [P≠C] notes there say where this
differs from the paper). A *sample* s is one (image, head) pair, b-major and h-minor
(S = B·H); heads of one image share its token positions. Per sample:

- Φ (2N, d): patch features of view 1 then view 2, L2-normalised here; φ_v: the L2-normalised
  CLS feature of view v. ρ_n = <Φ_n, φ_view(n)> (each view against its own CLS).
- Marginals: r = softmax_2N(ρ / temp_r); K_start distinct seeds drawn without replacement from
  Categorical(r) (Gumbel-top-k: the same distribution as torch.multinomial, not bitwise);
  c = softmax_K(ρ[seeds] / temp_c). ``uniform_marginals``: r = 1/2N, uniform seeds, c = 1/K.
  Centroids C = Φ[seeds], centroid positions E_c = E[seeds].
- Merge loop, K = K_start, ..., 2 (K_start − 1 Sinkhorn solves, K_start − 2 merges):
  C ← rows of C L2-normalised; G[n,k] = ||E_n − E_c,k|| / max_{n,k} G (per sample);
  M = −Φ Cᵀ + lam_pos·G, min–max normalised over a *group* of samples (below);
  P = sinkhorn(M, r, c) (the shared op, dense_jax.ops.sinkhorn); cost_K = Σ P ⊙ M;
  Q̃_K = P column-normalised separately within each view. Merge (not after K = 2):
  Pn = P / colsum(P), C' = Pnᵀ Φ, score = C'C'ᵀ with the diagonal excluded, (i*, j*) = the
  first maximum of the row-major flattened K × K score in the reference column order; the new
  column list is the K − 2 other columns in their old order, then P[:, i*] + P[:, j*] last.
  Then Pn = column-normalised merged P, C = Pnᵀ Φ, E_c = Pnᵀ E, c_k = Σ_n r_n Pn[n, k],
  c ← c / Σc.
- A-posteriori K: among the steps with K ≤ k_max, the one of least cost (strictly less ⇒ the
  earliest step, i.e. the larger K, wins ties). Q* = Q̃ of that step.
- Hard assignment: A = Q* where Q*[n, k] is the row maximum (over live columns; ties keep
  several ones), 0 elsewhere — the argmax runs on the per-view column-normalised values, not
  on P. Cluster k is valid iff it has positive mass in both views.

Static shapes (croc.md §5; jax-practices §5). Every sample keeps K_start column slots and a
``live`` mask; the Sinkhorn gives dead columns exactly 0 mass; the min/max of M run over live
entries only, the max of G over live columns only; a merge writes the summed column into slot
i*, zeroes slot j* and kills it. The reference's column order is tracked as a per-slot rank
(survivors keep their relative order, the merged column is last) and the merge pair is the
lexicographic minimum of (rank_i, rank_j) among the maximal scores, so exact ties resolve as
in the reference (the score is not bitwise symmetric, so the reference may pick i* > j*; the
merge is an unordered pair and gives the same result). The loop is a ``lax.scan`` with the
static trip count K_start − 1 that carries the best step so far; no host syncs, float32.
Outputs come back in the reference's column order: column j < K* is the reference's j-th column
of Q*, columns ≥ K* are dead and 0 — i.e. the reference's ``pad_sequence`` output, padded to
K_start instead of the device-wide max K*.

Degenerate inputs (no reference counterpart: the reference yields NaN there). If all positions of
a sample coincide, G is 0 instead of 0/0; a zero-mass column is normalised to 0 instead of 0/0;
the first eligible step is taken even if its cost is NaN, so K* is always in [2, k_max].

Normalisation groups (croc.md §4 step 3, §10). The reference min–max normalises M over the
whole per-device batch, so results depend on the device batch and the device count. Here the
group is explicit: ``norm_group`` consecutive *images* (all their heads), so results do not
depend on how the sample axis is sharded; ``norm_group=1`` normalises per image (its H heads
together), ``num_heads=1, norm_group=1`` per sample (§10's per-sample option), and
``norm_group=None`` over the whole batch given. To emulate a reference run with
per-device batch B_ref, use norm_group = B_ref.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from dense_jax.ops.sinkhorn import sinkhorn, transport_cost

_HI = lax.Precision.HIGHEST


class CrOCClusters(NamedTuple):
    """Result of :func:`croc_cluster`; columns are in the reference's order (module docstring)."""

    assign: jax.Array  # (S, 2N, K_start) float32: A = Q* at each token's argmax, else 0
    valid: jax.Array  # (S, K_start) bool: live at K* and present in both views
    k: jax.Array  # (S,) int32: chosen K*, in [2, k_max]
    costs: jax.Array  # (S, K_start - 1) float32: cost of the solve at K = K_start - t


def croc_cluster(
    feats_patch,
    feats_cls,
    positions,
    key=None,
    *,
    num_heads: int = 1,
    k_start: int,
    k_max: int,
    lam_pos: float,
    norm_group: int | None,
    sinkhorn_lambda: float = 20.0,
    sinkhorn_iters: int = 5,
    temp_r: float = 2.0,
    temp_c: float = 2.0,
    uniform_marginals: bool = False,
    seeds=None,
) -> CrOCClusters:
    """CrOC joint-view clustering of S = B·num_heads samples (module docstring; croc.md §4–§5).

    Args:
      feats_patch: (S, 2N, d) clustering features (q, k or v of one head) of the N patches of
        view 1 then view 2; samples ordered image-major, head-minor. Normalised here.
      feats_cls: (S, 2, d) the CLS feature of view 1 and view 2 of each sample.
      positions: (S, 2N, 2) token positions (x, y) in original-image pixels, same token order.
      key: PRNG key for the seeds (Gumbel-top-k); ignored, and may be None, if ``seeds`` given.
      num_heads: H, samples per image (consecutive); only used to form the normalisation groups.
      k_start: K_start >= 2, initial number of clusters (reference ``n_tokens``).
      k_max: largest eligible K for the a-posteriori choice, 2 <= k_max <= k_start.
      lam_pos: weight of the positional cost (reference ``pos_alpha``).
      norm_group: images per min–max normalisation group (must divide B); None = one group.
      sinkhorn_lambda, sinkhorn_iters: the Sinkhorn's lambda and trip count (reference 20, 5).
      temp_r, temp_c: temperatures of the token and centroid marginals (reference 2, 2).
      uniform_marginals: r = 1/2N, c = 1/K and uniform seeds (reference flag).
      seeds: optional (S, k_start) int distinct token indices replacing the sampled seeds (tests).

    Returns:
      :class:`CrOCClusters`.
    """
    feats_patch, feats_cls, positions = (jnp.asarray(x) for x in (feats_patch, feats_cls, positions))
    k_start, k_max, group = _validate(
        feats_patch, feats_cls, positions, key, seeds, num_heads, k_start, k_max, norm_group
    )
    if seeds is None:
        seeds_arr = None
    else:
        seeds_arr = jnp.asarray(seeds).astype(jnp.int32)
    return _croc_jit(
        feats_patch,
        feats_cls,
        positions,
        key,
        seeds_arr,
        k_start=k_start,
        k_max=k_max,
        lam_pos=float(lam_pos),
        group=group,
        lam=float(sinkhorn_lambda),
        n_iters=int(sinkhorn_iters),
        temp_r=float(temp_r),
        temp_c=float(temp_c),
        uniform=bool(uniform_marginals),
    )[0]


def view_centroids(assign, tokens, valid) -> jax.Array:
    """Per-view centroids c_v,k = Σ_{n ∈ v} A_v[n, k] · Z_v[n] (croc.md §4, teacher formula, before
    the L2 normalisation and CLS-norm rescaling, which the method applies).

    Args:
      assign: (S, 2N, K) hard assignment A from :func:`croc_cluster` (S = B·H).
      tokens: (B, 2N, D) final-layer patch tokens of view 1 then view 2 of each image (shared by
        the H heads of that image), or (S, 2N, D) per sample.
      valid: (S, K) bool.
    Returns:
      (2, S, K, D) float32, zero at invalid slots.
    """
    assign, tokens, valid = jnp.asarray(assign), jnp.asarray(tokens), jnp.asarray(valid, bool)
    s, n2, k = assign.shape
    if tokens.ndim != 3 or tokens.shape[1] != n2 or s % tokens.shape[0] or valid.shape != (s, k):
        raise ValueError(
            f"need assign (S, 2N, K), tokens (B, 2N, D) with B dividing S, valid (S, K); got "
            f"{assign.shape}, {tokens.shape}, {valid.shape}"
        )
    return _view_centroids(assign, tokens, valid)


@jax.jit
def _view_centroids(assign, tokens, valid):
    s, n2, k = assign.shape
    b, _, d = tokens.shape
    a = assign.astype(jnp.float32).reshape(b, s // b, 2, n2 // 2, k)
    z = tokens.astype(jnp.float32).reshape(b, 2, n2 // 2, d)
    cent = jnp.einsum("bhvnk,bvnd->vbhkd", a, z, precision=_HI).reshape(2, s, k, d)
    return jnp.where(valid[None, :, :, None], cent, 0.0)


# ------------------------------------------------------------------------------------------------
# Validation at the boundary (shapes and Python scalars only)


def _validate(fp, fc, pos, key, seeds, num_heads, k_start, k_max, norm_group):
    for name, v in (("k_start", k_start), ("k_max", k_max), ("num_heads", num_heads)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be a Python int, got {v!r}")
    if k_start < 2:
        raise ValueError(f"k_start must be >= 2 (the merge loop runs K = k_start..2), got {k_start}")
    if not 2 <= k_max <= k_start:
        raise ValueError(f"k_max must satisfy 2 <= k_max <= k_start = {k_start}, got {k_max}")
    if fp.ndim != 3 or fp.shape[1] % 2:
        raise ValueError(f"feats_patch must be (S, 2N, d), got {fp.shape}")
    s, n2, d = fp.shape
    if fc.shape != (s, 2, d):
        raise ValueError(f"feats_cls must be (S, 2, d) = {(s, 2, d)}, got {fc.shape}")
    if pos.shape != (s, n2, 2):
        raise ValueError(f"positions must be (S, 2N, 2) = {(s, n2, 2)}, got {pos.shape}")
    if k_start > n2:
        raise ValueError(f"k_start = {k_start} exceeds the number of tokens 2N = {n2}")
    if num_heads < 1 or s % num_heads:
        raise ValueError(f"num_heads = {num_heads} must divide the number of samples S = {s}")
    n_img = s // num_heads
    if norm_group is None:
        group = s
    else:
        if isinstance(norm_group, bool) or not isinstance(norm_group, int) or norm_group < 1:
            raise ValueError(f"norm_group must be a positive int or None, got {norm_group!r}")
        if n_img % norm_group:
            raise ValueError(f"norm_group = {norm_group} must divide the number of images B = {n_img}")
        group = norm_group * num_heads
    if seeds is None:
        if key is None:
            raise ValueError("need a PRNG key when no explicit seeds are given")
    elif tuple(jnp.shape(seeds)) != (s, k_start):
        raise ValueError(f"seeds must be (S, k_start) = {(s, k_start)}, got {jnp.shape(seeds)}")
    return k_start, k_max, group


# ------------------------------------------------------------------------------------------------
# The op


def unit(x, axis=-1):
    """x / max(‖x‖, 1e-12) along `axis` (a zero vector stays zero)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def _colnorm(P, live):
    """P / colsum(P) on live columns (0 elsewhere; a zero-mass column stays 0)."""
    col = jnp.sum(P, axis=-2, keepdims=True)
    ok = live[..., None, :] & (col > 0)
    return jnp.where(ok, P / jnp.where(ok, col, 1.0), 0.0)


def group_minmax(M, live, group):
    """Min–max normalise M over live entries of each group of ``group`` consecutive samples
    (croc.md §4 step 3; CrIBo's clustering calls it with every column live, cribo.md §4 step 3)."""
    s = M.shape[0]
    lv = jnp.broadcast_to(live[:, None, :], M.shape)
    Mg, lg = M.reshape(s // group, -1), lv.reshape(s // group, -1)
    mn = jnp.min(jnp.where(lg, Mg, jnp.inf), axis=1, keepdims=True)
    mx = jnp.max(jnp.where(lg, Mg, -jnp.inf), axis=1, keepdims=True)
    return ((Mg - mn) / (mx - mn)).reshape(M.shape)


def _per_view_colnorm(P, live):
    """Q̃: P (S, 2N, K) column-normalised separately within view 1 (rows :N) and view 2 (rows N:)."""
    s, n2, k = P.shape
    return _colnorm(P.reshape(s, 2, n2 // 2, k), live[:, None, :]).reshape(s, n2, k)


def _hard_assign(Q, live):
    """A = Q at each row's maximum over live columns (ties keep several), 0 elsewhere; valid =
    live and positive mass in both views (croc.md §4, hard assignment)."""
    s, n2, k = Q.shape
    rowmax = jnp.max(jnp.where(live[:, None, :], Q, -jnp.inf), axis=2, keepdims=True)
    A = jnp.where(live[:, None, :] & (Q == rowmax), Q, 0.0)
    mass = jnp.sum(A.reshape(s, 2, n2 // 2, k), axis=2)  # (S, 2, K)
    return A, live & (mass[:, 0] > 0) & (mass[:, 1] > 0)


def _merge_pair(score, live, rank):
    """Slots (i*, j*) (each (S,)) of the reference's merge: the first maximum of the row-major
    flattened K x K score in the reference column order (slot k sits at position rank[k]), over
    pairs of distinct live slots (croc.md §4 step 7, §5)."""
    s, k0, _ = score.shape
    pair_ok = live[:, :, None] & live[:, None, :] & ~jnp.eye(k0, dtype=bool)
    score = jnp.where(pair_ok, score, -jnp.inf)
    top = jnp.max(score, axis=(1, 2), keepdims=True)
    order = rank[:, :, None] * k0 + rank[:, None, :]
    order = jnp.where(pair_ok & (score == top), order, k0 * k0)
    flat = jnp.argmin(order.reshape(s, -1), axis=1)
    return flat // k0, flat % k0


@functools.partial(
    jax.jit,
    static_argnames=("k_start", "k_max", "lam_pos", "group", "lam", "n_iters", "temp_r", "temp_c", "uniform"),
)
def _croc_jit(
    fp, fc, pos, key, seeds, *, k_start, k_max, lam_pos, group, lam, n_iters, temp_r, temp_c, uniform
):
    """The op; returns (CrOCClusters, per-step live counts (K_start - 1, S))."""
    f32 = jnp.float32
    phi = unit(fp.astype(f32))  # (S, 2N, d)
    cls = unit(fc.astype(f32))  # (S, 2, d)
    E = pos.astype(f32)  # (S, 2N, 2)
    s, n2, _ = phi.shape
    n = n2 // 2
    K0 = k_start

    # Marginals and seeds (croc.md §4).
    rho = jnp.einsum("svnd,svd->svn", phi.reshape(s, 2, n, -1), cls, precision=_HI).reshape(s, n2)
    if uniform:
        r = jnp.full((s, n2), 1.0 / n2, f32)
        logits = jnp.zeros((s, n2), f32)
    else:
        logits = jax.nn.log_softmax(rho / temp_r, axis=-1)
        r = jnp.exp(logits)
    if seeds is None:
        g = jax.random.gumbel(key, (s, n2), f32)
        seeds = lax.top_k(logits + g, K0)[1]
    seeds = seeds.astype(jnp.int32)
    if uniform:
        c = jnp.full((s, K0), 1.0 / K0, f32)
    else:
        c = jax.nn.softmax(jnp.take_along_axis(rho, seeds, axis=1) / temp_c, axis=-1)
    C = jnp.take_along_axis(phi, seeds[:, :, None], axis=1)  # (S, K0, d)
    Ec = jnp.take_along_axis(E, seeds[:, :, None], axis=1)  # (S, K0, 2)
    live = jnp.ones((s, K0), bool)
    rank = jnp.broadcast_to(jnp.arange(K0, dtype=jnp.int32), (s, K0))
    slots = jnp.arange(K0, dtype=jnp.int32)

    def solve(C, Ec, c, live):
        Cn = unit(C)
        G = jnp.linalg.norm(E[:, :, None, :] - Ec[:, None, :, :], axis=-1)  # (S, 2N, K0)
        gmax = jnp.max(jnp.where(live[:, None, :], G, -jnp.inf), axis=(1, 2), keepdims=True)
        gmax = jnp.where(gmax > 0, gmax, 1.0)  # all positions equal: G = 0 (reference: 0/0 = NaN)
        M = -jnp.einsum("snd,skd->snk", phi, Cn, precision=_HI) + lam_pos * (G / gmax)
        M = group_minmax(M, live, group)
        P = sinkhorn(M, r, c, lam=lam, n_iters=n_iters, live=live)
        return P, transport_cost(P, M, live)

    def merge(P, live, rank):
        Pn = _colnorm(P, live)
        Cp = jnp.einsum("snk,snd->skd", Pn, phi, precision=_HI)
        score = jnp.einsum("sid,sjd->sij", Cp, Cp, precision=_HI)
        i, j = _merge_pair(score, live, rank)
        ri = jnp.take_along_axis(rank, i[:, None], axis=1)
        rj = jnp.take_along_axis(rank, j[:, None], axis=1)
        is_i, is_j = slots[None] == i[:, None], slots[None] == j[:, None]
        pj = jnp.take_along_axis(P, j[:, None, None], axis=2)
        P = jnp.where(is_i[:, None, :], P + pj, jnp.where(is_j[:, None, :], 0.0, P))
        live = live & ~is_j
        k_new = jnp.sum(live, axis=1, keepdims=True)
        shifted = rank - (rank > ri).astype(jnp.int32) - (rank > rj).astype(jnp.int32)
        rank = jnp.where(is_i, k_new - 1, jnp.where(live, shifted, K0))
        Pn = _colnorm(P, live)
        C = jnp.einsum("snk,snd->skd", Pn, phi, precision=_HI)
        Ec = jnp.einsum("snk,snx->skx", Pn, E, precision=_HI)
        c = jnp.einsum("sn,snk->sk", r, Pn, precision=_HI)
        c = jnp.where(live, c / jnp.sum(c, axis=1, keepdims=True), 0.0)
        return C, Ec, c, live, rank

    def step(carry, t):
        C, Ec, c, live, rank, best = carry
        P, cost = solve(C, Ec, c, live)
        Q = _per_view_colnorm(P, live)
        K_t = K0 - t
        eligible = K_t <= k_max
        take = eligible & ((cost < best["cost"]) | ~best["set"])
        best = {
            "cost": jnp.where(take, cost, best["cost"]),
            "set": best["set"] | eligible,
            "Q": jnp.where(take[:, None, None], Q, best["Q"]),
            "live": jnp.where(take[:, None], live, best["live"]),
            "rank": jnp.where(take[:, None], rank, best["rank"]),
            "k": jnp.where(take, K_t, best["k"]),
        }
        C, Ec, c, live2, rank2 = merge(P, live, rank)
        return (C, Ec, c, live2, rank2, best), (cost, jnp.sum(live, axis=1))

    best0 = {
        "cost": jnp.full((s,), jnp.inf, f32),
        "set": jnp.zeros((s,), bool),
        "Q": jnp.zeros((s, n2, K0), f32),
        "live": live,
        "rank": rank,
        "k": jnp.zeros((s,), jnp.int32),
    }
    # The scan's last merge (after K = 2) is computed and discarded (static trip count).
    carry, (costs, n_live) = lax.scan(step, (C, Ec, c, live, rank, best0), jnp.arange(K0 - 1))
    best = carry[-1]

    # Reference column order: gather slots by rank (dead slots last, in slot order).
    key_ = jnp.where(best["live"], best["rank"], K0 + slots[None])
    perm = jnp.argsort(key_, axis=1)
    Q = jnp.take_along_axis(best["Q"], perm[:, None, :], axis=2)
    live_o = jnp.take_along_axis(best["live"], perm, axis=1)

    A, valid = _hard_assign(Q, live_o)
    out = CrOCClusters(assign=A, valid=valid, k=best["k"], costs=jnp.swapaxes(costs, 0, 1))
    return out, n_live
