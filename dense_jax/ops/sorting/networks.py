"""The sorting networks as tables (neco.md §4): bitonic and odd-even transposition.

A network layer is stored as four ``(n,)`` tables indexed by *output* wire ``w``
(neco.md §4, "JAX formulation"): the comparator inputs ``A[w] <= B[w]``, whether ``w`` takes
the comparator's min (``MIN``) and whether it passes through unchanged (``PASS``, with
``A = B = w``). Since ``{A[w], B[w]}`` is ``w`` plus its partner, each layer needs a single
gather of the partner wire (``_scan_tables``) and an elementwise blend. ``_block_stages``
lists the bitonic stages whose P is cheaper composed block by block.
"""

from __future__ import annotations

import functools
import math

import numpy as np

NETWORKS = ("bitonic", "odd_even")


class _LayerBuilder:
    """Collects one layer's comparators into per-output-wire tables."""

    def __init__(self, n: int):
        self.a = np.full(n, -1, np.int32)
        self.b = np.full(n, -1, np.int32)
        self.is_min = np.zeros(n, bool)
        self.is_pass = np.zeros(n, bool)

    def comparator(self, a: int, b: int, min_wire: int) -> None:
        max_wire = b if min_wire == a else a
        for w, is_min in ((min_wire, True), (max_wire, False)):
            self.a[w], self.b[w], self.is_min[w] = a, b, is_min

    def passthrough(self, w: int) -> None:
        self.a[w] = self.b[w] = w
        self.is_pass[w] = True

    def finish(self) -> tuple[np.ndarray, ...]:
        for w in np.flatnonzero(self.a < 0):  # wires that no comparator touched
            self.passthrough(int(w))
        return self.a, self.b, self.is_min, self.is_pass


def _bitonic_layers(n: int) -> list[tuple[np.ndarray, ...]]:
    """Bitonic network; the top ``p = 2^k - n`` padded wires are virtual (neco.md §4)."""
    k = math.ceil(math.log2(n))
    p = 2**k - n
    layers = []
    for s in range(k):
        for t in range(s + 1):
            m = 2 ** (s - t)
            layer = _LayerBuilder(n)
            for i in range(2**k):
                if i % (2 * m) >= m:
                    continue
                j = i + m
                if i >= p:  # both wires real
                    descending = (i // 2 ** (s + 1)) % 2 == 1
                    layer.comparator(i - p, j - p, min_wire=(j if descending else i) - p)
                elif j >= p:  # only the upper wire is real: it passes through
                    layer.passthrough(j - p)
            layers.append(layer.finish())
    return layers


def _odd_even_layers(n: int) -> list[tuple[np.ndarray, ...]]:
    """Odd-even transposition network: ``n`` layers of ascending (i, i+1) comparators."""
    layers = []
    for ell in range(n):
        layer = _LayerBuilder(n)
        for i in range(ell % 2, n - 1, 2):
            layer.comparator(i, i + 1, min_wire=i)
        layers.append(layer.finish())
    return layers


@functools.lru_cache(maxsize=None)
def network_tables(network: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(A, B, MIN, PASS)``, each of shape ``(D, n)``, for ``network`` on ``n`` wires."""
    if n < 2:
        raise ValueError(f"sorting needs n >= 2, got {n}")
    if network == "bitonic":
        layers = _bitonic_layers(n)
    elif network == "odd_even":
        layers = _odd_even_layers(n)
    else:
        raise ValueError(f"unknown sorting network {network!r}; expected one of {NETWORKS}")
    tables = tuple(np.stack(column) for column in zip(*layers))
    for table in tables:
        table.setflags(write=False)
    return tables


@functools.lru_cache(maxsize=None)
def _scan_tables(network: str, n: int) -> tuple[np.ndarray, ...]:
    """Per-wire ``(partner, is_lower, keeps_alpha, PASS)`` derived from the ``(A, B, MIN, PASS)``
    tables of `network_tables` (neco.md §4).

    ``is_lower``: the wire is the comparator's input ``a``; ``keeps_alpha``: the wire's own
    value gets weight ``alpha`` (true exactly when ``is_lower == MIN``).
    """
    a, b, is_min, is_pass = network_tables(network, n)
    is_lower = a == np.arange(n)
    partner = np.where(is_lower, b, a).astype(np.int32)
    return partner, is_lower, is_lower == is_min, is_pass


@functools.lru_cache(maxsize=None)
def _block_stages(network: str, n: int) -> tuple[tuple[int, np.ndarray], ...]:
    """The bitonic stages whose P is composed as blocks: ``(block, partners)`` each.

    Bitonic stage ``s`` only compares wires inside aligned blocks of ``2^(s+1)`` of the
    ``2^k`` padded wires, so up to there P is block diagonal. A stage is composed in blocks
    while that is less work than the dense ``n x n`` P (``2^k * block < n^2``; for n = 49,
    the first 5 of 6 stages). ``partners`` ``(s, block)``: the in-block partner in each of the
    stage's layers after the first (the first merges two blocks: ``_merge_blocks``).
    """
    if network != "bitonic":
        return ()
    padded = 2 ** math.ceil(math.log2(n))
    stages = []
    for s in range(math.ceil(math.log2(n))):
        block = 2 ** (s + 1)
        if padded * block >= n * n:
            break
        strides = 2 ** (s - np.arange(1, s + 1))
        partners = (np.arange(block)[None, :] ^ strides[:, None]).astype(np.int32)
        partners.setflags(write=False)  # cached: shared by every trace
        stages.append((block, partners))
    return tuple(stages)
