"""Convert backbone weights between formats, always writing the official DINO/DINOv2 layout.

    python -m dense_jax.convert --in dinov2_vits14_reg4_pretrain.pth --out vits14_reg4.safetensors
    python -m dense_jax.convert --in vits14_reg4.safetensors --out back.pth          # needs torch
    python -m dense_jax.convert --in cribo_checkpoint.pth --select teacher --out cribo_vits16.safetensors

The input may be any file `dense_jax.models.weights` reads (official, training-checkpoint
wrappers, timm or Hugging Face layouts). The state dict is normalised to the official keys
and checked against the inferred (or given) variant before it is written, so a file that
converts also loads with ``dense_jax.models.load``.
"""

from __future__ import annotations

import argparse
import sys

from dense_jax.models import weights
from dense_jax.models.registry import variant_config


def convert(src: str, dst: str, variant: str = "auto", select: str | None = None) -> str:
    """Convert ``src`` to ``dst``; returns the variant the weights were checked against."""
    state = weights.normalize_state_dict(weights.read_state_dict(src), select)
    if variant == "auto":
        variant = weights.resolve_variant(state, src)
    cfg = variant_config(variant)
    params = weights.official_to_flax(state, cfg)
    weights.save_official(params, cfg, dst)
    return variant


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dense_jax.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--in", dest="src", required=True, help=".pth/.pt/.ckpt, .safetensors or .npz")
    parser.add_argument("--out", dest="dst", required=True, help=".safetensors, .npz or .pth")
    parser.add_argument("--variant", default="auto", help="backbone variant; 'auto' infers it from the keys")
    parser.add_argument(
        "--select",
        default=None,
        help="backbone to take from a training checkpoint: teacher (default) or student",
    )
    args = parser.parse_args(argv)
    try:
        variant = convert(args.src, args.dst, args.variant, args.select)
    except (weights.CheckpointMismatchError, FileNotFoundError, ImportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst} ({variant}, official layout)")
    return 0


if __name__ == "__main__":
    sys.exit(run())
