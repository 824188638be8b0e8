"""Pascal VOC 2012 segmentation: train, val and trainaug (with SegmentationClassAug or SBD)."""

from __future__ import annotations

from pathlib import Path

from dense_jax.data import shipped_lists
from dense_jax.data.segmentation.base import (
    SegmentationSource,
    _descend,
    _make_lut,
    _missing,
    _read_lines,
    _require,
)

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

_VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
_AUG_URL = "https://www.dropbox.com/s/oeu149j8qtbs1x0/SegmentationClassAug.zip"
_SBD_URL = "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"
_VOC_HELP = f"""
Download VOCtrainval_11-May-2012.tar   {_VOC_URL}
and for trainaug (the references read train masks from it too) one of
  SegmentationClassAug.zip            {_AUG_URL}
  SBD benchmark.tgz                   {_SBD_URL}
Expected layout:
  <root>/                              (= VOCdevkit; VOCdevkit/VOC2012 itself is accepted too)
    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png          palette PNG, 0 bg, 1..20, 255 void
    VOC2012/ImageSets/Segmentation/{{train,val}}.txt
    VOC2012/SegmentationClassAug/<id>.png       unzip SegmentationClassAug.zip here, or
    benchmark_RELEASE/dataset/{{cls/<id>.mat,train.txt,val.txt}}   (or pass sbd_root=)
"""


class VOCSegmentation(SegmentationSource):
    """Pascal VOC 2012 segmentation (evaluation.md §5); 21 classes, 255 = void.

    trainaug = (SBD train ∪ SBD val ∪ VOC train) \\ VOC val, with SBD's lists when SBD is
    given, else the ids of SegmentationClassAug (which holds exactly SBD ∪ VOC trainval).
    train/trainaug masks: SegmentationClassAug if present (as the references), else the VOC
    PNG when the image has one, else SBD ``cls/*.mat`` (the order used to build the Aug set).
    val masks: SegmentationClass. `sbd_root` is the directory holding cls/, train.txt, val.txt.
    A copy of the public splits is listed by the shipped lists (`dense_jax.data.shipped_lists`),
    so ids it lacks count as missing samples.
    """

    name, group, splits = "Pascal VOC 2012", "voc", ("train", "trainaug", "val")
    class_names = VOC_CLASSES
    _lut = _make_lut([(i, i) for i in range(21)] + [(255, 255)])

    def __init__(
        self,
        root,
        split: str = "trainaug",
        *,
        sbd_root=None,
        ids=None,
        subset=None,
        check_files: bool = True,
        lists_dir=None,
    ):
        self._check_split(split)
        voc = _descend(root, "VOC2012", "JPEGImages")
        sets = voc / "ImageSets" / "Segmentation"
        _require(
            self.name,
            root,
            [voc / "JPEGImages", voc / "SegmentationClass", sets / "train.txt", sets / "val.txt"],
            _VOC_HELP,
        )
        aug = voc / "SegmentationClassAug"
        sbd = Path(sbd_root) if sbd_root is not None else voc.parent / "benchmark_RELEASE" / "dataset"
        has_aug = aug.is_dir()
        has_sbd = all(p.exists() for p in (sbd / "cls", sbd / "train.txt", sbd / "val.txt"))
        if split == "trainaug" and not (has_aug or has_sbd):
            raise _missing(
                self.name + " trainaug masks",
                root,
                [aug, sbd / "cls", sbd / "train.txt", sbd / "val.txt"],
                _VOC_HELP,
            )
        train, val = _read_lines(sets / "train.txt"), _read_lines(sets / "val.txt")
        if split == "val":
            names = val
        elif split == "train":
            names = train
        else:
            extra = (
                _read_lines(sbd / "train.txt") + _read_lines(sbd / "val.txt")
                if has_sbd
                else [p.stem for p in aug.glob("*.png")]
            )
            names = sorted((set(extra) | set(train)) - set(val))
        names = shipped_lists.listing(self.group, split, names)  # the public list, if this is it

        def mask_path(i):
            voc_png = voc / "SegmentationClass" / f"{i}.png"
            if split == "val":
                return voc_png
            if has_aug:
                return aug / f"{i}.png"
            return voc_png if voc_png.is_file() else sbd / "cls" / f"{i}.mat"

        entries = {i: (voc / "JPEGImages" / f"{i}.jpg", mask_path(i)) for i in names}
        self._setup(
            voc.parent,
            split,
            entries,
            {},
            ids=ids,
            subset=subset,
            check_files=check_files,
            lists_dir=lists_dir,
        )
