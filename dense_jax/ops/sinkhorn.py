"""Sinkhorn transport plans for the CrOC and CrIBo clusterings. This module has one job: for a
batch of costs M (tokens x centroids) with row marginals r and column marginals c, return the
entropic transport plan P of the reference clustering code (croc.md §4 step 4 and §5, cribo.md
§4 step 4: CrIBo's reference reuses CrOC's routine). ``transport_cost`` gives that routine's
second output, the per-sample cost sum(P * M) (croc.md §4 step 5).

The rule, in the reference's form (non-log, fixed trip count, no tolerance):

    P = exp(-lam * M);  P = P / sum(P)                      (sum over all tokens and centroids)
    repeat n_iters times:
        P = P * (r / rowsum(P))[:, None]                    (rows to r)
        P = P * (c / colsum(P))[None, :]                    (columns to c)
    P = nan_to_num(P, nan=1e-8)

Defaults lam = 20 and n_iters = 5 (both configs). Since the column step comes last, the columns of
P sum to c (to rounding) after every solve, while the rows only approach r: at 5 iterations they
can be far from r for peaked marginals (croc.md §9 check 2: rows [.114749, .226758, .205390,
.453103] for r = [.1, .2, .3, .4]), so callers must not rely on rowsum(P) = r.

NaN guard. The last line is the reference's silent guard, kept by default (``nan_value=1e-8``;
``None`` turns it off). The plain iteration yields NaN when exp(-lam * M) underflows to 0 in a
whole row or sample (rowsum 0 -> r/0 = inf -> 0 * inf) or overflows to inf (inf/inf); NaN then
spreads through the next row/column sums, so in practice the whole sample becomes 1e-8.
Like ``torch.nan_to_num`` it also maps +inf to the largest finite value. For M in [0, 1] (the
min-max-normalised costs of both methods) and lam = 20 every kernel entry is >= exp(-20) ~ 2e-9,
so this does not trigger in fp32 (croc.md §4 step 4); for large lam use the log domain.

Log domain (``log_domain=True``). The plain iterates are P_t = diag(a_t) K diag(b_t) with
K = exp(-lam M), b_0 = 1, a_t = r / (K b_{t-1}), b_t = c / (K^T a_t): the initial P / sum(P) is
a scalar factor that the first row step removes. The log variant runs exactly this recursion on
f = log a and g = log b with logsumexp, f = log r - LSE_k(-lam M + g), g = log c - LSE_n(-lam M + f),
and returns exp(f + (-lam M) + g). So after *any* number of iterations (5 included, not only at
convergence) the two are the same matrix in exact arithmetic and differ by rounding only: in
float64 they agree to ~4e-15 relative on the croc.md fixture (1, 5 and 20 iterations) and ~5e-14
on random 64 x 10 problems after 300; in float32 both stay within ~1e-5 relative of the float64
plan (the plain one is the slightly more accurate at 5). What differs is the failure mode: the
log variant never under/overflows for finite M (so it is safe for large lam or unnormalised
costs), where the plain one returns the 1e-8 guard values. The same guard is applied to both.

Batching and masks (croc.md §5). M is (..., N, K), r (..., N), c (..., K); leading axes are
independent samples (e.g. (image, head)) and r, c, ``live`` may broadcast over them. ``live``
(..., K) bool marks the column slots in use: the kernel is exp(-lam M) on live columns and exactly
0 on dead ones (M there may hold anything, inf and NaN included), the column step scales by
c / colsum only on live columns (0 elsewhere, so no 0/0), and row sums therefore run over live
columns only. Dead columns come out exactly 0 (also after the guard), and the live part equals the
plan of the compacted problem (dead columns removed), which is what the reference solves. c on
dead columns is ignored; on live columns it is used as given (no renormalisation: if its live sum
differs from sum(r), the rows can never reach r). There is no row mask: neither spec has padded
tokens (CrOC and CrIBo use all 2N tokens; CrIBo's per-view validity is about clusters and is
computed after the solve). A padded token can still be given r_n = 0: its row is exactly 0 after
the first row step as long as its cost entries are finite.

Precision. Computation is float32 (inputs are cast, bf16/fp16 included, as the reference's
``.float()``), or float64 when M is float64, which needs x64 enabled; the output has that dtype.

Loop. ``lax.fori_loop`` with the static trip count ``n_iters`` (no data-dependent stop). The plain
loop is unrolled by ``min(n_iters, 5)``. Rough CPU timing (2 loaded cores) at the CrOC shape
(256 images x 6 heads, N = 392, K = 12, fp32, 5 iterations): unrolled ~50 ms per call vs ~100 ms
rolled (XLA fuses each column scaling with the next row sum), compile 0.15-0.3 s either way; with
1000 iterations an unroll of 5 still compiles in ~0.2 s and runs ~2x faster than rolled. The log
loop is bound by the exps inside logsumexp and gained nothing from unrolling (~150-200 ms either
way at 5 iterations, rolled faster at 50), so it stays rolled. Everything is jit-compiled (the
scalars are static) and free of host syncs; validation only looks at shapes and Python scalars.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_PLAIN_UNROLL = 5  # unroll of the plain loop, chosen by the CPU timing in the module docstring


def sinkhorn(
    M,
    r,
    c,
    *,
    lam: float = 20.0,
    n_iters: int = 5,
    live=None,
    log_domain: bool = False,
    nan_value: float | None = 1e-8,
) -> jax.Array:
    """Transport plan P (..., N, K) of the reference's Sinkhorn (module docstring).

    Args:
      M: (..., N, K) cost, normally min-max normalised to [0, 1].
      r: (..., N) row (token) marginals; leading axes broadcast to M's.
      c: (..., K) column (centroid) marginals; leading axes broadcast to M's.
      lam: entropic inverse temperature lambda > 0 (a concrete number; static).
      n_iters: number of {row, column} scaling pairs, a Python int >= 1 (static).
      live: optional (..., K) mask of live column slots; dead columns get exactly 0 mass.
      log_domain: run the same iterates on log-potentials with logsumexp (no under/overflow).
      nan_value: value replacing NaN at the end (reference: 1e-8); None leaves NaN in place.

    Returns:
      P in float32 (float64 if M is float64), shape M.shape. Column sums equal c on live columns.
    """
    M, r, c = jnp.asarray(M), jnp.asarray(r), jnp.asarray(c)
    lam, n_iters, nan_value = _check_scalars(lam, n_iters, nan_value)
    if live is not None:
        live = jnp.asarray(live)
    _check_shapes(M, r, c, live)
    dtype = jnp.float64 if M.dtype == jnp.float64 else jnp.float32
    M, r, c = M.astype(dtype), r.astype(dtype), c.astype(dtype)
    if live is not None:
        live = live.astype(bool)
    return _solve(M, r, c, live, lam=lam, n_iters=n_iters, log_domain=bool(log_domain), nan_value=nan_value)


def transport_cost(P, M, live=None) -> jax.Array:
    """Per-sample cost sum_{n,k} P * M over live entries, shape M.shape[:-2] (the reference's
    second return value of its Sinkhorn; croc.md §4 step 5). Dead columns count 0 even if M is
    inf or NaN there."""
    P = jnp.asarray(P)
    M = jnp.asarray(M).astype(P.dtype)
    if P.ndim < 2 or P.shape != M.shape:
        raise ValueError(f"P and M must have the same shape (..., N, K); got {P.shape} and {M.shape}")
    if live is not None:
        live = jnp.asarray(live).astype(bool)
        if live.shape[-1:] != M.shape[-1:] or not _broadcasts_to(live.shape[:-1], M.shape[:-2]):
            raise ValueError(f"live must have shape (..., {M.shape[-1]}) broadcasting to {M.shape[:-2]}")
    return _cost(P, M, live)


# ------------------------------------------------------------------------------------------------
# Validation at the boundary


def _check_scalars(lam, n_iters, nan_value):
    if isinstance(n_iters, bool) or not isinstance(n_iters, (int, np.integer)):
        raise ValueError(f"n_iters must be a Python int >= 1 (a static trip count), got {n_iters!r}")
    if n_iters < 1:
        raise ValueError(f"n_iters must be >= 1, got {n_iters}")
    if isinstance(lam, (str, bytes, bool)):
        raise ValueError(f"lam must be a real number > 0, got {lam!r}")
    try:
        lam = float(lam)
    except jax.errors.ConcretizationTypeError:
        raise ValueError(
            "lam must be a concrete number (it is a static constant), got a traced value"
        ) from None
    except (TypeError, ValueError):
        raise ValueError(f"lam must be a real number > 0, got {lam!r}") from None
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a finite number > 0, got {lam}")
    if nan_value is not None:
        if isinstance(nan_value, (str, bytes, bool)):
            raise ValueError(f"nan_value must be a number or None, got {nan_value!r}")
        try:
            nan_value = float(nan_value)
        except (TypeError, ValueError):
            raise ValueError(f"nan_value must be a number or None, got {nan_value!r}") from None
    return lam, int(n_iters), nan_value


def _broadcasts_to(shape, target) -> bool:
    try:
        return np.broadcast_shapes(tuple(shape), tuple(target)) == tuple(target)
    except ValueError:
        return False


def _check_shapes(M, r, c, live):
    for name, x in (("M", M), ("r", r), ("c", c)):
        if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
            raise ValueError(f"{name} must be a real array, got dtype {x.dtype}")
    if M.ndim < 2 or M.shape[-1] < 1 or M.shape[-2] < 1:
        raise ValueError(f"M must have shape (..., N, K) with N, K >= 1, got {M.shape}")
    n, k = M.shape[-2:]
    lead = M.shape[:-2]
    for name, x, size in (("r", r, n), ("c", c, k), ("live", live, k)):
        if x is None:
            continue
        if x.ndim < 1 or x.shape[-1] != size or not _broadcasts_to(x.shape[:-1], lead):
            raise ValueError(
                f"{name} must have shape (..., {size}) with leading axes broadcasting to {lead} "
                f"(M is {M.shape}), got {x.shape}"
            )


# ------------------------------------------------------------------------------------------------
# The solve


@functools.partial(jax.jit, static_argnames=("lam", "n_iters", "log_domain", "nan_value"))
def _solve(M, r, c, live, *, lam, n_iters, log_domain, nan_value):
    solve = _log_domain if log_domain else _plain
    P = solve(M, r, c, live, lam, n_iters)
    if nan_value is not None:
        P = jnp.nan_to_num(P, nan=nan_value)  # as torch.nan_to_num: +-inf -> largest finite too
    if live is not None:
        P = jnp.where(live[..., None, :], P, 0)  # dead columns stay exactly 0, guard included
    return P


@jax.jit
def _cost(P, M, live):
    prod = P * M
    if live is not None:
        prod = jnp.where(live[..., None, :], prod, 0)
    return jnp.sum(prod, axis=(-2, -1))


def _plain(M, r, c, live, lam, n_iters):
    P = jnp.exp(-lam * M)
    if live is not None:
        P = jnp.where(live[..., None, :], P, 0)
    P = P / jnp.sum(P, axis=(-2, -1), keepdims=True)

    def body(_, P):
        P = P * (r / jnp.sum(P, axis=-1))[..., :, None]
        col = jnp.sum(P, axis=-2)
        if live is None:
            scale = c / col
        else:
            scale = jnp.where(live, c / jnp.where(live, col, 1), 0)
        return P * scale[..., None, :]

    return lax.fori_loop(0, n_iters, body, P, unroll=min(n_iters, _PLAIN_UNROLL))


def _log_domain(M, r, c, live, lam, n_iters):
    logk = -lam * M
    if live is not None:
        logk = jnp.where(live[..., None, :], logk, -jnp.inf)
    log_r, log_c = jnp.log(r), jnp.log(c)
    f = jnp.zeros(M.shape[:-1], M.dtype)
    g = jnp.zeros(M.shape[:-2] + M.shape[-1:], M.dtype)  # b_0 = 1 on live columns
    if live is not None:
        g = jnp.where(live, g, -jnp.inf)

    def body(_, fg):
        _, g = fg
        f = log_r - jax.nn.logsumexp(logk + g[..., None, :], axis=-1)
        g = log_c - jax.nn.logsumexp(logk + f[..., :, None], axis=-2)
        if live is not None:
            g = jnp.where(live, g, -jnp.inf)
        return f, g

    f, g = lax.fori_loop(0, n_iters, body, (f, g))
    return jnp.exp(f[..., :, None] + logk + g[..., None, :])
