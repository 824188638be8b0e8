"""COMUS (Zadaianchuk et al., "Unsupervised semantic segmentation with self-supervised
object-centric representations", ICLR 2023; comus.md): a pipeline, not a gradient SSL step.

- `saliency`: binary masks from a folder, ViT attention (DINOSeg, LOST) or a user network;
- `discovery`: one proposal per image, crop CLS features, spectral clustering, filtering,
  pseudo-masks;
- `self_train`: rounds of a segmentation network trained by the one trainer through the
  ``segmentation`` method, each labelling the next split;
- `scoring`: Hungarian / majority-vote mIoU, per-class IoU, discovered-category counts;
- `pipeline`: the stages in order, cached in the workdir (``python -m dense_jax.main
  --config=configs/comus_voc.py``).
"""
