"""File lists (dense_jax/data/lists.py) and the prepare CLI (dense_jax/prepare.py): the §1
counts, determinism, class balance and nesting of the fraction draws, the COCO 10% list, and
--verify feeding excluded.txt back to the readers."""

import io

import numpy as np
import pytest
from PIL import Image

from dense_jax import prepare
from dense_jax.data import lists
from dense_jax.data import segmentation as seg


def test_per_class_counts_match_evaluation_spec():
    for group, n, classes in (("voc", 10582, 20), ("ade20k", 20210, 150)):
        sizes = {d: lists.per_class_count(n, d, classes) * classes for d in lists.DIVISORS}
        assert sizes == lists.EXPECTED_FRACTION_SIZES[group]
    assert lists.per_class_count(10582, 128, 20) == 4  # 4.13 per class
    assert lists.per_class_count(20210, 8, 150) == 17  # 16.84 per class
    assert lists.per_class_count(50, 1, 100) == 1  # halves round up


def _presence(num_images=300, seed=0):
    """Skewed fake class presence: class 5 is rare, class 1 is everywhere."""
    rng = np.random.default_rng(seed)
    presence = {}
    for i in range(num_images):
        classes = {1} | set(rng.choice([2, 3, 4], size=rng.integers(0, 3), replace=False).tolist())
        if i % 40 == 0:
            classes.add(5)
        presence[f"img_{i:04d}"] = frozenset(classes)
    return presence


def test_balanced_fractions_properties():
    presence, classes, counts = _presence(), [1, 2, 3, 4, 5], [1, 3, 6]
    drawn = lists.balanced_fractions(presence, classes, counts, seed=42)
    assert drawn == lists.balanced_fractions(dict(reversed(presence.items())), classes, counts, 42)
    assert drawn != lists.balanced_fractions(presence, classes, counts, seed=400)
    for n, ids in zip(counts, drawn):
        assert len(ids) == len(set(ids)) == n * len(classes) and list(ids) == sorted(ids)
        assert set(ids) <= set(presence)
        for c in classes:  # every class present in at least n of the drawn images
            assert sum(c in presence[i] for i in ids) >= n
    for small, large in zip(drawn, drawn[1:]):
        assert set(small) <= set(large)
    # The rare class 5 (8 images) gets its own images although class 1 is in all of them.
    assert sum(5 in presence[i] for i in drawn[-1]) >= 6


def test_balanced_fractions_errors():
    with pytest.raises(ValueError, match="class 5 is present in only 8 images"):
        lists.balanced_fractions(_presence(), [1, 2, 3, 4, 5], [9], seed=0)
    with pytest.raises(ValueError, match="non-decreasing"):
        lists.balanced_fractions(_presence(), [1, 2], [3, 1], seed=0)


def test_coco_fraction():
    ids = [f"{i:012d}" for i in range(118287)]
    a = lists.random_fraction(ids, 10, seed=400)
    assert len(a) == lists.EXPECTED_FRACTION_SIZES["coco"][10] == 11828
    assert a == lists.random_fraction(reversed(ids), 10, seed=400)  # independent of listing order
    assert a != lists.random_fraction(ids, 10, seed=0) and set(a) <= set(ids)
    assert list(a) == sorted(a)


def test_read_write_and_missing_list(tmp_path):
    path = tmp_path / "voc" / "trainaug_128_42.txt"
    lists.write_ids(path, ["2008_007456", "2011_001498"])
    path.write_text(path.read_text() + "\n")  # hbird-style files may end with blank lines
    assert lists.read_ids(path) == ("2008_007456", "2011_001498")
    lists.write_excluded(tmp_path / "voc" / "excluded.txt", {"b": "bad\nfile", "a": ""})
    assert lists.read_excluded(tmp_path / "voc" / "excluded.txt") == {"a": "", "b": "bad file"}
    assert lists.read_excluded(tmp_path / "nothing.txt") == {}
    with pytest.raises(FileNotFoundError, match="python -m dense_jax.prepare --dataset voc"):
        lists.load(tmp_path / "VOCdevkit" / "dense_jax_lists", "voc", "trainaug_128_42")


# ---------------------------------------------------------------------------- prepare CLI


def _save(path, arr, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path, fmt)


def _fake_voc(root, num_sbd=90):
    """VOC2012 + SegmentationClassAug with num_sbd extra images; image k holds 2 classes."""
    voc = root / "VOC2012"
    train, val = ["2007_000001", "2007_000002"], ["2007_000003", "2007_000004"]
    sbd = [f"2008_{k:06d}" for k in range(num_sbd)]
    for k, i in enumerate(train + val + sbd):
        _save(voc / "JPEGImages" / f"{i}.jpg", np.full((4, 4, 3), k % 256))
        mask = np.zeros((4, 4), np.uint8)
        mask[:2], mask[2:, :2], mask[3, 3] = 1 + k % 20, 1 + (3 * k + 5) % 20, 255
        _save(voc / "SegmentationClassAug" / f"{i}.png", mask)
        if i in train + val:
            _save(voc / "SegmentationClass" / f"{i}.png", mask)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(train) + "\n")
    (sets / "val.txt").write_text("\n".join(val) + "\n")
    return root


def test_prepare_voc_writes_deterministic_balanced_lists(tmp_path, capsys):
    root = _fake_voc(tmp_path / "VOCdevkit")
    assert prepare.run(["--dataset", "voc", "--root", str(root)]) == 0
    out = root / "dense_jax_lists" / "voc"
    trainaug = lists.read_ids(out / "trainaug.txt")
    assert len(trainaug) == 92 and lists.read_ids(out / "val.txt") == ("2007_000003", "2007_000004")
    assert not set(trainaug) & set(lists.read_ids(out / "val.txt"))
    # 92 images / 8 / 20 classes -> 1 per class; 1/64 and 1/128 round to 0 and are not written.
    reader = seg.VOCSegmentation(root, "trainaug")
    for seed in lists.SEEDS:
        ids = lists.load(out.parent, "voc", lists.fraction_name("trainaug", 8, seed))
        assert seg.VOCSegmentation(root, "trainaug", subset=f"trainaug_8_{seed}").ids == ids
        assert len(ids) == 20 and set(ids) <= set(trainaug)
        present = set()
        for k in range(len(reader)):
            if reader.ids[k] in ids:
                present |= set(np.unique(reader.read_mask(k)).tolist())
        assert set(range(1, 21)) <= present
        assert not (out / f"trainaug_128_{seed}.txt").exists()
    readme = (out / "README.txt").read_text()
    assert "OUR OWN deterministic draws" in readme and "trainaug 92 (official: 10582)" in readme
    assert "1/8 -> 1 per class = 20 images" in capsys.readouterr().out
    # Same data -> same lists, wherever they are written.
    other = tmp_path / "elsewhere"
    assert prepare.run(["--dataset", "voc", "--root", str(root), "--lists-dir", str(other)]) == 0
    for path in out.glob("*.txt"):
        assert (other / "voc" / path.name).read_text() == path.read_text()
    # Naming the VOC2012 folder as root puts the lists in the same place.
    assert prepare.prepare("voc", root / "VOC2012", seeds=(42,), log=lambda _: None) == out


def test_prepare_verify_excludes_unreadable_files(tmp_path):
    root = _fake_voc(tmp_path / "VOCdevkit", num_sbd=3)
    jpg = root / "VOC2012" / "JPEGImages" / "2008_000001.jpg"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(buf, "JPEG")
    jpg.write_bytes(buf.getvalue()[:-1000])  # header intact, data truncated
    _save(root / "VOC2012" / "SegmentationClassAug" / "2008_000001.png", np.zeros((64, 64)))
    _save(root / "VOC2012" / "SegmentationClassAug" / "2008_000002.png", np.full((4, 4), 99))
    reader = seg.VOCSegmentation(root, "trainaug")
    with pytest.raises(seg.UnreadableSampleError, match="2008_000001.jpg"):
        reader[reader.ids.index("2008_000001")]
    assert prepare.run(["--dataset", "voc", "--root", str(root), "--verify"]) == 0
    excluded = lists.read_excluded(root / "dense_jax_lists" / "voc" / "excluded.txt")
    assert set(excluded) == {"2008_000001", "2008_000002"} and "99" in excluded["2008_000002"]
    reader = seg.VOCSegmentation(root, "trainaug")
    assert "2008_000001" not in reader.ids and len(reader.skipped) == 2
    assert "2008_000001" not in lists.load(reader.lists_dir, "voc", "trainaug")


def test_prepare_coco_fraction_and_errors(tmp_path, capsys):
    root = tmp_path / "coco"
    for k in range(25):
        _save(root / "train2017" / f"{k:012d}.jpg", np.zeros((4, 4, 3)))
        _save(root / "stuffthingmaps_trainval2017" / "train2017" / f"{k:012d}.png", np.zeros((4, 4)))
    _save(root / "val2017" / "000000000100.jpg", np.zeros((4, 4, 3)))
    _save(root / "stuffthingmaps_trainval2017" / "val2017" / "000000000100.png", np.zeros((4, 4)))
    assert prepare.run(["--dataset", "coco", "--root", str(root)]) == 0
    ids = lists.load(root / "dense_jax_lists", "coco", lists.coco_fraction_name())
    assert ids == lists.random_fraction([f"{k:012d}" for k in range(25)], 10, 400) and len(ids) == 2
    assert seg.COCOThings(root, "train", subset="train_10pct_400").ids == ids
    assert seg.open_source("coco_stuff", "train10", root).ids == ids
    with pytest.raises(ValueError, match="either ids= or subset="):
        seg.COCOStuff(root, "train", ids=ids, subset="train_10pct_400")
    assert prepare.run(["--dataset", "ade20k", "--root", str(tmp_path / "none")]) == 1
    assert "ADEChallengeData2016.zip" in capsys.readouterr().err
