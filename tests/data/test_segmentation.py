"""Readers of the evaluation datasets (dense_jax/data/segmentation/) on tiny fake copies
written in the official layouts: ids, label values, ignore handling, the COCO mapping tables
on hand-made pixels, missing-dataset messages and the skipping of bad files."""

import io
import json
import pickle

import grain
import numpy as np
import pytest
import scipy.io
from PIL import Image

from dense_jax.data import lists
from dense_jax.data import segmentation as seg

H, W = 6, 8


def _palette():
    """The VOC colour map: index -> RGB, so colours differ from indices (15 -> 192,128,128)."""
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def _png(path, arr, palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(arr, np.uint8))
    if palette:
        im.putpalette(_palette().ravel().tolist())
        assert im.mode == "P"
    im.save(path)


def _jpg(path, h=H, w=W, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=95)


def _mask(*values, h=H, w=W):
    """(h, w) mask whose rows cycle through `values`."""
    return np.array([[values[r % len(values)]] * w for r in range(h)], np.uint8)


def _lines(path, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


# ---------------------------------------------------------------------------- VOC

VOC_TRAIN = ["2007_000001", "2007_000002"]
VOC_VAL = ["2007_000003", "2007_000004"]
SBD_ONLY = ["2008_000001", "2008_000002"]


def _voc(root, aug=True, sbd=False):
    voc = root / "VOC2012"
    for k, i in enumerate(VOC_TRAIN + VOC_VAL + SBD_ONLY):
        _jpg(voc / "JPEGImages" / f"{i}.jpg", seed=k)
    for i in VOC_TRAIN + VOC_VAL:
        _png(voc / "SegmentationClass" / f"{i}.png", _mask(0, 15, 255), palette=True)
    _lines(voc / "ImageSets" / "Segmentation" / "train.txt", VOC_TRAIN)
    _lines(voc / "ImageSets" / "Segmentation" / "val.txt", VOC_VAL)
    if aug:  # as distributed: SBD ∪ VOC trainval, grayscale, no void boundary
        for i in VOC_TRAIN + VOC_VAL + SBD_ONLY:
            _png(voc / "SegmentationClassAug" / f"{i}.png", _mask(0, 7))
    if sbd:  # SBD lists overlap VOC val (2007_000003), which trainaug must drop
        data = root / "benchmark_RELEASE" / "dataset"
        (data / "cls").mkdir(parents=True)
        for i in SBD_ONLY + ["2007_000001", "2007_000003"]:
            scipy.io.savemat(
                data / "cls" / f"{i}.mat",
                {"GTcls": {"Segmentation": _mask(0, 12), "CategoriesPresent": [12]}},
            )
        _lines(data / "train.txt", SBD_ONLY[:1] + ["2007_000003"])
        _lines(data / "val.txt", SBD_ONLY[1:] + ["2007_000001"])
    return root


def test_voc_splits_ids_and_masks(tmp_path):
    root = _voc(tmp_path / "VOCdevkit")
    val = seg.VOCSegmentation(root, "val")
    assert val.ids == tuple(VOC_VAL) and val.skipped == ()
    assert val.num_classes == 21 and val.class_names[15] == "person" and val.ignore_index == 255
    sample = val[0]
    assert sample["id"] == "2007_000003"
    assert sample["image"].dtype == np.uint8 and sample["image"].shape == (H, W, 3)
    # Palette PNG read as indices (colour of 15 is (192,128,128)); void 255 kept.
    np.testing.assert_array_equal(sample["mask"], _mask(0, 15, 255))
    with Image.open(root / "VOC2012" / "JPEGImages" / "2007_000003.jpg") as im:
        np.testing.assert_array_equal(sample["image"], np.asarray(im.convert("RGB")))

    trainaug = seg.VOCSegmentation(root)  # default split
    assert trainaug.ids == tuple(sorted(VOC_TRAIN + SBD_ONLY))
    assert not set(trainaug.ids) & set(VOC_VAL)
    np.testing.assert_array_equal(trainaug.read_mask(0), _mask(0, 7))  # from SegmentationClassAug
    train = seg.VOCSegmentation(root, "train")
    assert train.ids == tuple(VOC_TRAIN)
    np.testing.assert_array_equal(train[1]["mask"], _mask(0, 7))  # references read train from Aug
    # The VOCdevkit/VOC2012 folder itself is accepted as root.
    same = seg.VOCSegmentation(root / "VOC2012", "val")
    assert same.ids == val.ids and same.lists_dir == val.lists_dir == root / "dense_jax_lists"
    with pytest.raises(ValueError, match="split must be one of"):
        seg.VOCSegmentation(root, "test")


def test_voc_sbd_mat_masks_and_trainaug_rule(tmp_path):
    root = _voc(tmp_path / "VOCdevkit", aug=False, sbd=True)
    trainaug = seg.VOCSegmentation(root, "trainaug")
    # (SBD train ∪ SBD val ∪ VOC train) \ VOC val
    assert trainaug.ids == ("2007_000001", "2007_000002", "2008_000001", "2008_000002")
    masks = {i: trainaug.read_mask(k) for k, i in enumerate(trainaug.ids)}
    np.testing.assert_array_equal(masks["2008_000001"], _mask(0, 12))  # SBD .mat
    np.testing.assert_array_equal(masks["2007_000001"], _mask(0, 15, 255))  # VOC PNG wins


def test_voc_trainaug_needs_aug_or_sbd(tmp_path):
    root = _voc(tmp_path / "VOCdevkit", aug=False)
    assert len(seg.VOCSegmentation(root, "val")) == 2
    with pytest.raises(FileNotFoundError, match="SegmentationClassAug.zip"):
        seg.VOCSegmentation(root, "trainaug")


def test_ids_subset_and_grain(tmp_path):
    root = _voc(tmp_path / "VOCdevkit")
    sub = seg.VOCSegmentation(root, "trainaug", ids=["2008_000002", "2007_000001"])
    assert sub.ids == ("2007_000001", "2008_000002")
    with pytest.raises(ValueError, match="not in the split"):
        seg.VOCSegmentation(root, "trainaug", ids=["2007_000003"])  # a val id
    ds = grain.MapDataset.source(sub)
    assert len(ds) == 2 and ds[1]["id"] == "2008_000002"
    clone = pickle.loads(pickle.dumps(sub))  # grain workers receive pickled sources
    np.testing.assert_array_equal(clone[0]["mask"], sub[0]["mask"])
    with pytest.raises(IndexError):
        sub[2]


# ---------------------------------------------------------------------------- bad files


def test_bad_files_are_skipped_with_reasons(tmp_path):
    root = _voc(tmp_path / "VOCdevkit")
    voc = root / "VOC2012"
    (voc / "JPEGImages" / "2007_000001.jpg").write_bytes(b"not a jpeg")  # corrupt image
    _png(voc / "SegmentationClassAug" / "2007_000002.png", _mask(0, 7, w=W + 1))  # wrong size
    _png(voc / "SegmentationClassAug" / "2008_000001.png", np.zeros((H, W, 3)))  # RGB mask
    (voc / "JPEGImages" / "2008_000002.jpg").unlink()  # missing image
    (voc / "SegmentationClass" / "2007_000004.png").unlink()  # missing val mask
    reader = seg.VOCSegmentation(root, "trainaug")
    assert len(reader) == 0
    reasons = dict(reader.skipped)
    assert "unreadable image" in reasons["2007_000001"]
    assert "is 9x6 but image" in reasons["2007_000002"]
    assert "mode 'RGB'" in reasons["2008_000001"]
    assert "missing image file" in reasons["2008_000002"]
    assert "4 skipped" in repr(reader)
    val = seg.VOCSegmentation(root, "val")
    assert val.ids == ("2007_000003",) and "missing mask file" in dict(val.skipped)["2007_000004"]


def test_truncated_file_and_bad_values_raise_then_exclusion_skips(tmp_path):
    root = _voc(tmp_path / "VOCdevkit")
    voc = root / "VOC2012"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (H * 8, W * 8, 3), np.uint8)).save(buf, "JPEG")
    _png(voc / "SegmentationClass" / "2007_000003.png", _mask(0, 15, h=H * 8, w=W * 8), palette=True)
    (voc / "JPEGImages" / "2007_000003.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _png(voc / "SegmentationClass" / "2007_000004.png", _mask(0, 100), palette=True)  # 100: no class
    reader = seg.VOCSegmentation(root, "val")
    assert len(reader) == 2  # the headers are fine
    with pytest.raises(seg.UnreadableSampleError, match="2007_000003.jpg.*--verify"):
        reader[0]
    with pytest.raises(seg.UnreadableSampleError, match=r"values \[100\]"):
        reader.read_mask(1)
    lists.write_excluded(
        lists.list_path(lists.lists_dir(root), "voc", "excluded"), {"2007_000003": "truncated"}
    )
    reader = seg.VOCSegmentation(root, "val")
    assert reader.ids == ("2007_000004",) and "truncated" in dict(reader.skipped)["2007_000003"]


# ---------------------------------------------------------------------------- missing data


@pytest.mark.parametrize(
    "kind, split, words",
    [
        (
            seg.VOCSegmentation,
            "val",
            ["VOCtrainval_11-May-2012.tar", "VOC2012/JPEGImages", "ImageSets/Segmentation"],
        ),
        (
            seg.COCOThings,
            "train",
            ["panoptic_annotations_trainval2017.zip", "train2017", "stuffthingmaps_trainval2017"],
        ),
        (seg.COCOStuff, "val", ["stuff_annotations_trainval2017.zip", "stuff_val2017_pixelmaps"]),
        (seg.ADE20K, "train", ["ADEChallengeData2016.zip", "annotations/{training,validation}"]),
        (seg.PascalContext, "val", ["trainval_merged.json", "SegmentationClassContext"]),
        (seg.DAVIS2017, "val", ["DAVIS-2017-trainval-480p.zip", "Annotations/480p"]),
    ],
)
def test_missing_dataset_message(tmp_path, kind, split, words):
    with pytest.raises(FileNotFoundError) as info:
        kind(tmp_path / "data", split)
    message = str(info.value)
    assert "not found under root" in message and "Expected layout" in message
    assert "never downloads" in message and str(tmp_path / "data") in message
    for word in words:
        assert word in message


# ---------------------------------------------------------------------------- COCO


def test_coco_tables():
    things, stuff = seg.coco_things_lut(), seg.coco_stuff_lut()
    assert list(seg.COCO_THINGS_CLASSES) == sorted(seg.COCO_THINGS_CLASSES)
    assert list(seg.COCO_STUFF_CLASSES) == sorted(seg.COCO_STUFF_CLASSES)
    expected = {
        1: 9,
        2: 11,
        9: 11,
        10: 8,
        18: 1,
        25: 1,
        27: 0,
        33: 0,
        34: 10,
        44: 7,
        52: 4,
        62: 5,
        70: 5,
        72: 3,
        78: 2,
        84: 6,
        90: 6,
        0: 255,
        92: 255,
        183: 255,
        200: 255,
    }
    assert {k: int(things[k]) for k in expected} == expected
    stuff_ids = [i for ids in seg.COCO_STUFF_IDS.values() for i in ids]
    assert sorted(stuff_ids) == list(range(92, 183))  # every stuff id exactly once
    assert [int(stuff[i]) for i in (0, 95, 101, 106, 157, 171, 182, 183)] == [255, 0, 2, 8, 8, 12, 9, 255]
    assert set(things[things >= 0].tolist()) == set(range(12)) | {255}
    assert set(stuff[stuff >= 0].tolist()) == set(range(15)) | {255}


def _rgb_ids(ids):
    ids = np.asarray(ids, np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)


def _coco(root):
    for split, names in (("train", ["000000000001", "000000000002"]), ("val", ["000000000003"])):
        for k, n in enumerate(names):
            _jpg(root / f"{split}2017" / f"{n}.jpg", seed=k)
    ann = root / "annotations"
    # Panoptic: dog segment 1001, person 5, crowd person 70000, stuff 2000 (tree-merged), void 0.
    segment_rows = [1001, 5, 70000, 2000, 0, 1001]
    _png(ann / "panoptic_train2017" / "000000000001.png", _rgb_ids([[v] * W for v in segment_rows]))
    _png(ann / "panoptic_train2017" / "000000000002.png", _rgb_ids(np.zeros((H, W))))
    categories = [
        {"id": 1, "name": "person", "supercategory": "person", "isthing": 1},
        {"id": 18, "name": "dog", "supercategory": "animal", "isthing": 1},
        {"id": 184, "name": "tree-merged", "supercategory": "plant", "isthing": 0},
    ]
    segments = [
        {"id": i, "category_id": c, "iscrowd": crowd}
        for i, c, crowd in ((1001, 18, 0), (5, 1, 0), (70000, 1, 1), (2000, 184, 0))
    ]
    (ann / "panoptic_train2017.json").write_text(
        json.dumps(
            {  # image 2 has no annotation
                "categories": categories,
                "annotations": [{"file_name": "000000000001.png", "image_id": 1, "segments_info": segments}],
            }
        )
    )
    # Stuff pixelmaps: unlabeled 0, building 95, sky 157, solid 182, things ("other") 183.
    for n in ("000000000001", "000000000002"):
        _png(ann / "stuff_train2017_pixelmaps" / f"{n}.png", _mask(0, 95, 157, 182, 183))
    # stuffthingmaps: category id - 1; dog 17, person 0, sky 156, unlabeled 255.
    for split, n in (("train", "000000000001"), ("train", "000000000002"), ("val", "000000000003")):
        _png(root / "stuffthingmaps_trainval2017" / f"{split}2017" / f"{n}.png", _mask(17, 0, 156, 255))
    return root


def test_coco_things_from_panoptic(tmp_path):
    root = _coco(tmp_path / "coco")
    things = seg.COCOThings(root, "train")
    assert things.source == "panoptic" and things.num_classes == 12
    assert things.ids == ("000000000001",)
    assert "no annotation" in dict(things.skipped)["000000000002"]
    mask = things[0]["mask"]
    # dog -> animal 1, person -> 9 (crowd too), stuff -> 255, void -> 255
    np.testing.assert_array_equal(mask[:, 0], [1, 9, 9, 255, 255, 1])


def test_coco_panoptic_checks(tmp_path):
    root = _coco(tmp_path / "coco")
    png = root / "annotations" / "panoptic_train2017" / "000000000001.png"
    _png(png, _rgb_ids(np.full((H, W), 77)))  # segment 77 is not in segments_info
    with pytest.raises(seg.UnreadableSampleError, match=r"segment ids \[77\]"):
        seg.COCOThings(root, "train")[0]
    path = root / "annotations" / "panoptic_train2017.json"
    data = json.loads(path.read_text())
    data["categories"][1]["supercategory"] = "vehicle"  # dog is not a vehicle
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="COCO-Things table"):
        seg.COCOThings(root, "train")


def test_coco_stuff_and_stuffthingmaps(tmp_path):
    root = _coco(tmp_path / "coco")
    stuff = seg.COCOStuff(root, "train")
    assert stuff.source == "pixelmaps" and len(stuff) == 2 and stuff.num_classes == 15
    np.testing.assert_array_equal(stuff[0]["mask"][:5, 0], [255, 0, 8, 9, 255])
    things = seg.COCOThings(root, "train", source="stuffthingmaps")
    np.testing.assert_array_equal(things[1]["mask"][:4, 0], [1, 9, 255, 255])
    stuff = seg.COCOStuff(root, "val")  # val has only stuffthingmaps: auto falls back
    assert stuff.source == "stuffthingmaps"
    np.testing.assert_array_equal(stuff[0]["mask"][:4, 0], [255, 255, 8, 255])
    _png(root / "annotations" / "stuff_train2017_pixelmaps" / "000000000002.png", _mask(0, 50))
    with pytest.raises(seg.UnreadableSampleError, match=r"values \[50\]"):
        seg.COCOStuff(root, "train").read_mask(1)  # a thing id cannot be in a stuff pixelmap
    with pytest.raises(ValueError, match="source must be"):
        seg.COCOStuff(root, "train", source="panoptic")


def test_coco_stuff164k_171_classes_from_stuffthingmaps(tmp_path):
    """MMSeg's COCO-Stuff-164k order: 80 things by id, then stuff 92..182; the fine stuff names
    agree with the super-category table (every wall-*, floor-*, ceiling-*, window-* in its group)."""
    from dense_jax.data.segmentation import coco

    assert len(coco.COCO_STUFF164K_IDS) == len(set(coco.COCO_STUFF164K_IDS)) == 171
    for group in ("wall", "floor", "ceiling", "window"):
        prefixed = {i for i in range(92, 183) if coco.COCO_STUFF_NAMES[i - 92].startswith(group + "-")}
        assert len(prefixed) >= 2 and prefixed <= set(coco.COCO_STUFF_IDS[group]), group
    lut = coco.coco_stuff164k_lut()
    assert (lut[list(coco.COCO_UNUSED_IDS)] == -1).all() and lut[0] == 255 and lut[182] == 170
    val = seg.open_source("coco_stuff164k", "val", _coco(tmp_path / "coco"))
    assert val.source == "stuffthingmaps" and val.num_classes == 171
    # stuffthingmaps rows: dog (id 18), person (1), sky-other (157), unlabeled
    np.testing.assert_array_equal(val[0]["mask"][:4, 0], [16, 0, 80 + 157 - 92, 255])
    assert val.class_names[80 + 157 - 92] == "sky-other"


# ---------------------------------------------------------------------------- ADE20K, Context


def test_ade20k_conventions(tmp_path):
    ade = tmp_path / "ADEChallengeData2016"
    for split, folder in (("train", "training"), ("val", "validation")):
        name = f"ADE_{split}_00000001"
        _jpg(ade / "images" / folder / f"{name}.jpg")
        _png(ade / "annotations" / folder / f"{name}.png", _mask(0, 1, 150, 13))
    ref = seg.ADE20K(tmp_path, "val")  # the parent folder is accepted as root
    assert seg.open_source("ade", "val", ade).ids == ref.ids
    assert ref.ids == ("ADE_val_00000001",)
    assert ref.num_classes == 151 and ref.ignore_index == 0 and ref.class_names[:2] == ("other", "wall")
    np.testing.assert_array_equal(ref[0]["mask"][:4, 0], [0, 1, 150, 13])
    mmseg = seg.ADE20K(ade, "train", reduce_zero_label=True)
    assert mmseg.num_classes == 150 and mmseg.ignore_index == 255 and mmseg.class_names[-1] == "flag"
    np.testing.assert_array_equal(mmseg[0]["mask"][:4, 0], [255, 0, 149, 12])


def test_pascal_context(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2010"
    for i in ("2008_000002", "2008_000003"):
        _jpg(voc / "JPEGImages" / f"{i}.jpg")
        _png(voc / "SegmentationClassContext" / f"{i}.png", _mask(0, 1, 59))
    _lines(voc / "ImageSets" / "SegmentationContext" / "val.txt", ["2008_000003"])
    c59 = seg.PascalContext(tmp_path / "VOCdevkit", "val")
    assert c59.ids == ("2008_000003",) and c59.num_classes == 59 and c59.class_names[0] == "aeroplane"
    np.testing.assert_array_equal(c59[0]["mask"][:3, 0], [255, 0, 58])
    c60 = seg.PascalContext(voc, "val", num_classes=60)
    assert c60.num_classes == 60 and c60.class_names[0] == "background"
    np.testing.assert_array_equal(c60[0]["mask"][:3, 0], [0, 1, 59])


# ---------------------------------------------------------------------------- DAVIS


def _davis(root):
    """DAVIS/ with val = bear (3 frames, objects 1, 2 and void) and blackswan (one mis-sized
    annotation); train lists a sequence without frames."""
    davis = root / "DAVIS"
    for seq, n in (("bear", 3), ("blackswan", 2)):
        for t in range(n):
            _jpg(davis / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", seed=t)
            w = W + 2 if (seq, t) == ("blackswan", 1) else W  # one mis-sized annotation
            _png(
                davis / "Annotations" / "480p" / seq / f"{t:05d}.png", _mask(0, 1, 2, 255, w=w), palette=True
            )
    _lines(davis / "ImageSets" / "2017" / "val.txt", ["bear", "blackswan"])
    _lines(davis / "ImageSets" / "2017" / "train.txt", ["dogs-jump"])
    return davis


def test_davis_sequences(tmp_path):
    davis = _davis(tmp_path)
    val = seg.DAVIS2017(tmp_path, "val")
    assert val.ids == ("bear",) and "blackswan" in dict(val.skipped)
    sample = val[0]
    assert sample["id"] == "bear" and sample["frame_ids"] == ("00000", "00001", "00002")
    assert sample["image"].shape == (3, H, W, 3) and sample["mask"].shape == (3, H, W)
    assert sample["num_objects"] == 2  # objects 1, 2; 255 is void
    np.testing.assert_array_equal(sample["mask"][2, :4, 0], [0, 1, 2, 255])
    train = seg.DAVIS2017(davis, "train")
    assert len(train) == 0 and "no frames" in dict(train.skipped)["dogs-jump"]
