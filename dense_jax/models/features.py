"""Feature kinds read off the ViT's output dict (evaluation.md §0, §2b, §3c; comus.md §3, §8)."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

KINDS = ("patch", "last_blocks", "attn", "cls", "attn_heads", "keys")


def select(outputs: Mapping[str, jax.Array], kind: str, n_blocks: int = 4) -> jax.Array:
    """One dense output of the ViT dict: ``patch`` (B, h, w, D: last block after the final
    norm, §0), ``last_blocks`` (B, h, w, n·D: the last ``n_blocks`` normed blocks concatenated,
    earliest first, the CrOC linear probe's features, §2b), ``attn`` (B, h, w: last-block CLS
    attention averaged over heads, registers excluded, CBFE's foreground cue, §3c); COMUS's
    ``cls`` (B, D: CLS after the final norm, the object-crop feature), ``attn_heads``
    (B, heads, h, w: the CLS attention per head, DINOSeg) and ``keys`` (B, heads, 1 + N, D/heads:
    last-block keys, CLS first, LOST)."""
    if kind == "patch":
        return outputs["patch"]
    if kind == "last_blocks":
        blocks = outputs["last_blocks"]
        if blocks.shape[0] < n_blocks:
            raise ValueError(
                f"the backbone keeps {blocks.shape[0]} last blocks, {n_blocks} asked: "
                f"set model.n_last_blocks >= {n_blocks}"
            )
        return jnp.concatenate(list(blocks[-n_blocks:]), axis=-1)
    if kind == "attn":
        return outputs["attn_cls"].mean(axis=1)
    if kind in ("cls", "attn_heads", "keys"):
        return outputs[{"cls": "cls", "attn_heads": "attn_cls", "keys": "k"}[kind]]
    raise ValueError(f"unknown feature kind {kind!r}; known: {KINDS}")


def width(embed_dim: int, kind: str, n_blocks: int = 4) -> int:
    """Channels of a feature kind for a backbone of width `embed_dim`."""
    return {"patch": embed_dim, "last_blocks": n_blocks * embed_dim, "attn": 1, "cls": embed_dim}[kind]
