"""The GPU suite's retrieval entries: exact k-NN at Hummingbird VOC 1/1 scale, and Hummingbird
predictions on the accelerator against the host CPU backend (issue 16 items 1 and 5).

k-NN: M = 10,240,000 unit-norm memory rows of D = 384 (VOC 1/1 as ``configs/eval/hbird_voc.py``
sets it), fp32, k = 30, ``ops.knn`` exact
(``Precision.HIGHEST``, default chunk and group size). One block of ``queries`` random
queries is timed (median of ``repeats`` calls after the compiling one) and scaled linearly to
the whole VOC val query set, 1,449 images × (504 / 14)² = 1,877,904 patch queries for a /14
backbone (the time is linear in Q: every query scans every row).

Hummingbird check: a fixed synthetic case (features, memory rows, soft-label counts, labels
drawn from one seed) goes through ``ops.knn`` and ``eval.retrieval.kernels.aggregate`` on the
default device and on the host's CPU backend of the same process; the indices and the
predicted label maps must be equal.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from dense_jax.eval.retrieval import kernels
from dense_jax.ops.knn import knn

VOC_VAL_QUERIES = 1449 * (504 // 14) ** 2


def knn_timing(memory_rows: int, dim: int, queries: int, k: int, repeats: int) -> dict:
    """Seconds of one exact k-NN block on the default device, scaled to the VOC val queries."""
    key_m, key_q = jax.random.split(jax.random.key(0))
    memory = jax.random.normal(key_m, (memory_rows, dim), jnp.float32)
    memory = memory / jnp.linalg.norm(memory, axis=-1, keepdims=True)
    q = jax.random.normal(key_q, (queries, dim), jnp.float32)
    search = jax.jit(lambda a, m: knn(a, m, k, metric="dot"))
    start = time.perf_counter()
    jax.block_until_ready(search(q, memory))
    first_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(search(q, memory))
        times.append(time.perf_counter() - start)
    block_s = statistics.median(times)
    return {
        "memory_rows": memory_rows,
        "dim": dim,
        "k": k,
        "queries_timed": queries,
        "compile_and_first_s": round(first_s, 2),
        "block_s": float(f"{block_s:.4g}"),  # 4 significant digits: ms-scale blocks keep their precision
        "tflops": round(2.0 * queries * memory_rows * dim / block_s / 1e12, 2),
        "voc_val_queries": VOC_VAL_QUERIES,
        "voc_full_exact_s": round(block_s * VOC_VAL_QUERIES / queries, 1),
    }


def _hbird_case(seed: int = 0):
    """Synthetic Hummingbird inputs: 2 query images of 8×8 patches (patch 4, 32² labels),
    2048 memory rows of width 64 with uint16 counts of 5 classes."""
    rng = np.random.default_rng(seed)
    b, g, patch, d, rows, classes = 2, 8, 4, 64, 2048, 5
    queries = rng.normal(size=(b * g * g, d)).astype(np.float32)
    memory = rng.normal(size=(rows, d)).astype(np.float32)
    memory /= np.linalg.norm(memory, axis=1, keepdims=True)
    counts = rng.multinomial(patch * patch, np.ones(classes) / classes, size=rows).astype(np.uint16)
    labels = rng.integers(0, classes, size=(b, g * patch, g * patch)).astype(np.int32)
    return queries, memory, counts, labels, patch, classes


def hbird_predictions(device) -> tuple[np.ndarray, np.ndarray]:
    """(neighbour indices, predicted label maps) of the synthetic case computed on `device`."""
    queries, memory, counts, labels, patch, classes = _hbird_case()
    q, mem, cnt, gt = (jax.device_put(a, device) for a in (queries, memory, counts, labels))
    sims, idx = jax.jit(lambda a, m: knn(a, m, 30, metric="dot"))(q, mem)
    qnorm = jnp.maximum(jnp.linalg.norm(q, axis=-1), 1e-12)
    valid = jax.device_put(np.ones(len(labels), bool), device)
    _, pred = kernels.aggregate(sims, idx, qnorm, cnt, gt, valid, patch, classes, 255, 0.02)
    return np.asarray(idx), np.asarray(pred)


def hbird_device_vs_cpu() -> dict:
    """Hummingbird indices and predictions on the default device against the CPU backend."""
    device, cpu = jax.devices()[0], jax.devices("cpu")[0]
    idx_dev, pred_dev = hbird_predictions(device)
    idx_cpu, pred_cpu = hbird_predictions(cpu)
    return {
        "device": device.device_kind,
        "index_mismatches": int((idx_dev != idx_cpu).sum()),
        "prediction_mismatches": int((pred_dev != pred_cpu).sum()),
        "pixels": int(pred_cpu.size),
        "equal": bool((idx_dev == idx_cpu).all() and (pred_dev == pred_cpu).all()),
    }
