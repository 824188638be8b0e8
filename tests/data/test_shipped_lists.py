"""The public fixed file lists shipped in the package (dense_jax/data/shipped_lists.py): their
counts, checksums, format and mutual consistency, and the readers listing a user's copy by them
so that an id the copy lacks is a counted missing sample, never a silently smaller split."""

import re
from pathlib import Path

import pytest

from configs.eval import base
from dense_jax.data import lists, shipped_lists
from dense_jax.data import segmentation as seg
from dense_jax.eval import features
from tests.data.test_segmentation import _jpg, _lines, _mask, _png

FORMATS = {"voc": re.compile(r"20(07|08|09|10|11)_\d{6}"), "davis2017": re.compile(r"[a-z]+(-[a-z]+)*")}


@pytest.mark.parametrize("group, split", sorted(shipped_lists.SHIPPED))
def test_counts_checksums_format(group, split):
    ids = shipped_lists.load(group, split)
    count, digest = shipped_lists.SHIPPED[group, split]
    assert len(ids) == count == lists.EXPECTED_SIZES[group][split]
    assert shipped_lists.sha256(group, split) == digest
    assert list(ids) == sorted(set(ids)), "sorted, no duplicates"
    assert all(FORMATS[group].fullmatch(i) for i in ids)
    assert shipped_lists.path(group, split).read_text() == "".join(f"{i}\n" for i in ids)


def test_voc_splits_are_consistent():
    train, val, trainaug = (set(shipped_lists.load("voc", s)) for s in ("train", "val", "trainaug"))
    assert train <= trainaug and not val & trainaug and not train & val
    assert {"2007_000032", "2011_003255"} <= train and {"2007_000033", "2011_003271"} <= val
    assert "bike-packing" in shipped_lists.load("davis2017", "val")


def test_listing_rule():
    assert shipped_lists.listing("voc", "val", ["2007_000033"]) == list(shipped_lists.load("voc", "val"))
    assert shipped_lists.listing("voc", "val", ["2007_000033", "toy"]) == ["2007_000033", "toy"]
    assert shipped_lists.listing("voc", "val", []) == []
    assert shipped_lists.listing("ade20k", "val", ["a"]) == ["a"]  # none shipped


def _voc_copy(root, val_ids, aug_ids=()):
    """A VOC copy holding the files of `val_ids` (listed in its val.txt) and of `aug_ids`
    (SegmentationClassAug only); train.txt is empty."""
    voc = root / "VOC2012"
    for k, i in enumerate(list(val_ids) + list(aug_ids)):
        _jpg(voc / "JPEGImages" / f"{i}.jpg", seed=k)
        folder = "SegmentationClass" if i in val_ids else "SegmentationClassAug"
        _png(voc / folder / f"{i}.png", _mask(0, 15, 255), palette=i in val_ids)
    (voc / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    _lines(voc / "ImageSets" / "Segmentation" / "val.txt", val_ids)
    _lines(voc / "ImageSets" / "Segmentation" / "train.txt", [])
    return root


def test_copy_missing_ids_is_counted_then_stops_evaluation(tmp_path):
    present = ["2007_000033", "2011_003271"]  # a copy of VOC val that lacks 1447 of its images
    root = _voc_copy(tmp_path / "VOCdevkit", present, aug_ids=["2007_000032"])
    val = seg.VOCSegmentation(root, "val")
    assert val.ids == tuple(present)
    skipped = dict(val.skipped)
    assert len(skipped) == 1447 and "missing image file" in skipped["2007_000042"]
    trainaug = seg.VOCSegmentation(root, "trainaug")  # derived from the Aug folder: 1 of 10,582
    assert trainaug.ids == ("2007_000032",) and len(trainaug.skipped) == 10581
    data = base.make("kmeans", "voc", "demo").data
    data.update(dict(base.DATASETS["voc"], root=str(root), limit_val=0))
    with pytest.raises(features.MissingSamplesError, match="voc val: 1447 of 1449 listed samples"):
        features.open_source(data, "val")
    data.allow_missing = True
    assert len(features.open_source(data, "val")) == 2


def test_davis_copy_missing_a_sequence(tmp_path):
    davis = tmp_path / "DAVIS"
    for t in range(2):
        _jpg(davis / "JPEGImages" / "480p" / "blackswan" / f"{t:05d}.jpg", seed=t)
        _png(davis / "Annotations" / "480p" / "blackswan" / f"{t:05d}.png", _mask(0, 1), palette=True)
    _lines(davis / "ImageSets" / "2017" / "val.txt", ["blackswan"])
    val = seg.DAVIS2017(davis, "val")
    assert val.ids == ("blackswan",) and len(val.skipped) == 29
    assert "no frames" in dict(val.skipped)["soapbox"]


# ---------------------------------------------------------------------------- hbird's file sets

SIZES = {"voc": lists.EXPECTED_FRACTION_SIZES["voc"], "ade": lists.EXPECTED_FRACTION_SIZES["ade20k"]}


def _public_split(name):
    """The ids of the split hbird's sets of `name` draw from: VOC trainaug (shipped), ADE20K
    train (ADE_train_00000001 .. ADE_train_00020210, contiguous)."""
    if name == "voc":
        return set(shipped_lists.load("voc", "trainaug"))
    return {f"ADE_train_{i:08d}" for i in range(1, lists.EXPECTED_SIZES["ade20k"]["train"] + 1)}


PREFIX = {"voc": "trainaug", "ade": "training"}  # hbird's own file names


def _file_set(folder, name, d, seed):
    return lists.read_ids(folder / f"1_div_{d}" / f"{PREFIX[name]}_{d}_{seed}.txt")


@pytest.mark.parametrize("name, split", [("voc", "trainaug"), ("ade", "train")])
def test_hbird_file_sets_counts_nesting_and_checksum(name, split):
    folder = shipped_lists.hbird_file_sets(name)
    assert shipped_lists.HBIRD[name][1:] == (split, shipped_lists.folder_sha256(folder))
    public = _public_split(name)
    for seed in lists.SEEDS:
        sets = {d: _file_set(folder, name, d, seed) for d in SIZES[name]}
        for d, ids in sets.items():
            assert len(ids) == SIZES[name][d] and list(ids) == sorted(set(ids)), (d, seed)
            assert set(ids) <= public
        assert set(sets[128]) <= set(sets[64]) <= set(sets[8]), seed  # hbird's sets are nested
    assert len(list(folder.rglob("*.txt"))) == 15


class _Ids:
    def __init__(self, ids):
        self.ids = tuple(sorted(ids))

    def __len__(self):
        return len(self.ids)


def test_resolve_file_sets_prefers_the_shipped_sets_on_a_complete_copy(caplog):
    from dense_jax.eval.retrieval import subsets

    trainaug = shipped_lists.load("voc", "trainaug")
    folder = str(shipped_lists.hbird_file_sets("voc"))
    complete = _Ids(trainaug)
    assert subsets.resolve_file_sets("", "voc", complete) == folder
    chosen = subsets.file_set_subsets(folder, complete, (1 / 128, 1 / 64, 1 / 8, 1.0), 42)
    assert {f: len(v) for f, v in chosen.items()} == {1 / 128: 80, 1 / 64: 160, 1 / 8: 1320}
    assert subsets.resolve_file_sets("draw", "voc", complete) == ""
    assert subsets.resolve_file_sets("/my/sets", "voc", complete) == "/my/sets"
    assert subsets.resolve_file_sets("", "scenes", _Ids(["a"])) == ""
    with caplog.at_level("WARNING"):
        assert subsets.resolve_file_sets("", "voc", _Ids(["2007_000001", "2007_000002"])) == ""
        assert caplog.text == ""  # a toy copy: no shipped id, nothing to say
        used = set(lists.read_ids(Path(folder) / "1_div_128" / "trainaug_128_42.txt"))
        short = _Ids([i for i in trainaug if i != sorted(used)[0]])
        assert subsets.resolve_file_sets("", "voc", short) == ""
    assert "1 ids of the shipped file sets" in caplog.text and sorted(used)[0] in caplog.text


def test_resolve_file_sets_ade_uses_hbird_sets_on_a_complete_train_copy():
    """ADE Hummingbird (data.name "ade") takes hbird's ADE sets as VOC takes its VOC sets; the
    positions it returns are those of the listed ids in the reader's sorted ids."""
    from dense_jax.eval.retrieval import subsets

    train = _Ids(_public_split("ade"))
    folder = str(shipped_lists.hbird_file_sets("ade"))
    assert subsets.resolve_file_sets("", "ade", train) == folder
    assert subsets.resolve_file_sets("draw", "ade", train) == ""
    chosen = subsets.file_set_subsets(folder, train, (1 / 128, 1 / 64, 1 / 8, 1.0), 400)
    assert {f: len(v) for f, v in chosen.items()} == {1 / 128: 150, 1 / 64: 300, 1 / 8: 2550}
    listed = _file_set(Path(folder), "ade", 128, 400)
    assert [train.ids[i] for i in chosen[1 / 128]] == list(listed)
    assert subsets.resolve_file_sets("", "ade", _Ids(["ADE_train_99999999"])) == ""  # a toy copy
    missing = _Ids(set(train.ids) - {listed[0]})
    assert subsets.resolve_file_sets("", "ade", missing) == ""  # incomplete copy: our draws
