"""Linear-probe variants shared by the linear_<dataset> configs (evaluation.md §2a, §2b).

``path:a,b`` applies a, then b (``linear_voc.py:demo,croc``: the CrOC probe on the demo data
for the full protocol's epochs):

  demo       built-in scenes, tiny backbone, small sizes (configs/eval/base.py; CPU)
  croc       CrOC's probe (§2b): concatenated last 4 blocks, full-resolution labels, Adam,
             no schedule, the dataset's ``croc_epochs``
  croc_demo  demo, then CrOC's probe with the demo's 20 epochs
"""

from __future__ import annotations

import ml_collections as mlc

from configs.eval import base


def _croc_probe(c: mlc.ConfigDict) -> None:
    """§2b: last 4 blocks concatenated, labels at the full S×S resolution, Adam 1e-3, no
    schedule; batch size and augmentation unspecified -> §2a's."""
    c.linear.update(
        dict(variant="croc", label_size=0, optimizer="adam", lr=1e-3, weight_decay=0.0, milestones=())
    )


def variants(croc_epochs: int) -> dict:
    """The linear configs' variants, with ``croc`` training for ``croc_epochs`` epochs."""

    def croc(c: mlc.ConfigDict) -> None:
        _croc_probe(c)
        c.linear.epochs = croc_epochs

    def croc_demo(c: mlc.ConfigDict) -> None:
        base.demo(c)
        _croc_probe(c)

    return {**base.VARIANTS, "croc": croc, "croc_demo": croc_demo}
