"""MMSeg-style linear decoders on a frozen backbone, as configs of the linear protocol
(evaluation.md §2b ADE20K rows, §2c CrIBo's Segmenter linear decoder).

Shared recipe: Adam, MMSeg's iteration-wise ``poly`` decay (power 0.9), batch 16, a fixed
iteration count, 512² training crops, weight decay 0, one probe per lr of the sweep and the
best val mIoU reported (the references report the best of their sweep, i.e. a selection on
val: named here, not hidden). Deviations from MMSeg that change numbers slightly: the
training crop is a RandomResizedCrop(512, scale (0.25, 1)) with hflip instead of MMSeg's
random rescale (ratio 0.5–2 of a 2048×512 scale) + 512² crop + photometric distortion, and
validation squashes each image to 512² (``eval_size``) instead of sliding-window inference
at the original resolution.

Variants: ``demo`` (built-in scenes, 60 iterations, two lrs; CPU) and ``last4`` (the last 4
blocks concatenated: CrIBo Table 7).
"""

from __future__ import annotations

import ml_collections as mlc

from configs import common
from configs.eval import base


def recipe(
    c: mlc.ConfigDict, iterations: int, lr_sweep: tuple, n_blocks: int = 1, variant: str = "segmenter"
) -> None:
    """The shared MMSeg-style recipe with its iteration count, lr sweep and feature blocks."""
    c.input.size = 512
    c.linear.update(
        dict(
            variant=variant,
            n_blocks=n_blocks,
            label_size=0,
            eval_size=512,
            batch_size=16,
            optimizer="adam",
            lr=lr_sweep[0],
            lr_sweep=tuple(lr_sweep),
            weight_decay=0.0,
            schedule="poly",
            power=0.9,
            min_lr=0.0,
            milestones=(),
            iterations=iterations,
            crop_scale=(0.25, 1.0),
            augment=True,
        )
    )


def demo(c: mlc.ConfigDict) -> None:
    """The scenes with the tiny backbone; 60 iterations, two lrs, 128² crops."""
    base.demo(c)
    c.linear.update(
        dict(
            eval_size=128,
            batch_size=16,
            iterations=60,
            lr_sweep=(3e-3, 1e-3),
            lr=3e-3,
            label_size=0,
            augment=True,
        )
    )


def last4(c: mlc.ConfigDict) -> None:
    """CrIBo Table 7: the last 4 blocks concatenated instead of the last layer."""
    c.linear.n_blocks = 4


VARIANTS = {"demo": demo, "last4": last4}


def make(
    dataset: str,
    arg: str | None,
    iterations: int,
    lr_sweep: tuple,
    n_blocks: int = 1,
    variant: str = "segmenter",
) -> mlc.ConfigDict:
    """The linear protocol on `dataset` with the MMSeg-style recipe, then the variants of `arg`."""
    c = base.make("linear", dataset)
    recipe(c, iterations, lr_sweep, n_blocks, variant)
    return common.apply_variants(c, arg, VARIANTS)
