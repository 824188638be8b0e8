"""Supervised ceiling of the demo backbone on the built-in scenes (issue 4 diagnosis).

Trains ``vit_demo16`` from scratch together with a linear patch classifier (AdamW) on
scenes train images and prints val token accuracy and mIoU (labels at the token grid,
ignore excluded) every ``--every`` steps: how much a tiny ViT learns about the scene
classes in a CPU-minutes budget when it is *told* the labels. An SSL demo cannot beat it.
``--export`` writes the trained backbone (float16, official layout): the labelled backbone of
``tests/eval/test_protocols_rank_backbones.py`` is made so (300 steps on the ``hard`` scenes).

    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/scenes_supervised.py --steps 600 --every 100
    JAX_PLATFORMS=cpu PYTHONPATH=. python benchmarks/scenes_supervised.py --steps 300 --every 0 \\
        --style hard --export tests/assets/scenes_vit_demo16_hard_supervised.safetensors
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dense_jax import models
from dense_jax.data.scenes import NUM_CLASSES, ScenesConfig, render_scene
from dense_jax.eval import metrics
from dense_jax.eval.features import eval_item
from dense_jax.models.registry import variant_config


def load(
    split: str, count: int, size: int, patch: int, style: str = "learnable"
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised images (N, S, S, 3) and token-grid labels (N, S/P, S/P)."""
    items = [
        eval_item(
            render_scene(i, split, ScenesConfig(image_size=(size, size), style=style)), size, size // patch
        )
        for i in range(count)
    ]
    return np.stack([i["image"] for i in items]), np.stack([i["mask"] for i in items]).astype(np.int32)


def train(
    steps: int,
    size: int = 128,
    n_train: int = 1024,
    batch: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    every: int = 0,
    log: Callable[[int, dict], None] = lambda step, s: None,
    style: str = "learnable",
):
    """(model, backbone params) of vit_demo16 trained with a linear patch classifier on scenes
    of `style`; ``log(step, scores)`` gets the val scores every ``every`` steps (0 = never)."""
    model, vit = models.load("vit_demo16", None, seed=seed)
    x_train, y_train = load("train", n_train, size, model.patch_size, style)
    x_val, y_val = load("val", 96, size, model.patch_size, style) if every else (None, None)
    params = {
        "vit": vit,
        "head": {"w": jnp.zeros((model.embed_dim, NUM_CLASSES)), "b": jnp.zeros(NUM_CLASSES)},
    }
    tx = optax.adamw(lr, weight_decay=0.05)
    opt_state = tx.init(params)

    def logits(p, x):
        return model.apply({"params": p["vit"]}, x)["patch"] @ p["head"]["w"] + p["head"]["b"]

    def loss_fn(p, x, y):
        keep = y < NUM_CLASSES
        ce = optax.softmax_cross_entropy_with_integer_labels(logits(p, x), jnp.where(keep, y, 0))
        return (ce * keep).sum() / keep.sum()

    @jax.jit
    def step(p, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    predict = jax.jit(lambda p, x: jnp.argmax(logits(p, x), -1))
    rng = np.random.default_rng(seed)
    for it in range(1, steps + 1):
        idx = rng.choice(len(x_train), batch, replace=False)
        params, opt_state, loss = step(params, opt_state, x_train[idx], y_train[idx])
        if every and it % every == 0:
            cm = np.asarray(
                metrics.confusion_matrix(
                    np.asarray(predict(params, x_val)), y_val, NUM_CLASSES, ignore_index=255
                )
            )
            log(it, {"loss": float(loss), **metrics.miou_from_confusion(cm)})
    return model, params["vit"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n-train", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--style", default="learnable", choices=("learnable", "hard"))
    parser.add_argument("--export", default="", help="write the backbone here (.safetensors, float16)")
    args = parser.parse_args()
    start = time.perf_counter()

    def log(step: int, s: dict) -> None:
        print(
            f"step {step}: loss {s['loss']:.3f}  val token acc {s['pixel_accuracy']:.3f}  "
            f"mIoU {100 * s['miou']:.1f}  ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )

    _, vit = train(
        args.steps, args.size, args.n_train, args.batch, args.lr, every=args.every, log=log, style=args.style
    )
    if args.export:
        half = jax.tree.map(lambda a: np.asarray(a, np.float16), jax.device_get(vit))
        models.save_official(half, variant_config("vit_demo16"), args.export)
        print(f"wrote {args.export} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
