"""COMUS on COCO (configs/comus_coco.py): the 81-class reader (background + 80 things, no ignore)
on a tiny fake COCO folder, the config, and Table 3's "discovered categories" counts."""

import numpy as np
import pytest

from configs import comus_coco, comus_voc
from dense_jax.data import segmentation as seg
from dense_jax.data.segmentation import coco
from dense_jax.eval.features import open_source
from dense_jax.methods.comus import scoring
from tests.data.test_segmentation import _coco

DOG, PERSON = 17, 1  # COCO ids 18 and 1 are the 17th and 1st thing categories


def test_lut_maps_the_80_things_to_1_to_80_and_the_rest_to_background():
    lut = coco.coco81_lut()
    assert len(coco.COCO_THING_IDS) == len(coco.COCO_THING_NAMES) == 80
    np.testing.assert_array_equal(lut[list(coco.COCO_THING_IDS)], np.arange(1, 81))
    assert (lut[list(coco.COCO_UNUSED_IDS)] == -1).all()  # never in COCO masks: an error if seen
    assert (lut[[0, *range(92, 201)]] == 0).all()  # unlabeled and stuff are background, no ignore
    assert [coco.COCO81_CLASSES[i] for i in (0, PERSON, DOG, 80)] == [
        "background",
        "person",
        "dog",
        "toothbrush",
    ]


def test_reader_from_panoptic_and_stuffthingmaps(tmp_path):
    root = _coco(tmp_path / "coco")
    train = seg.open_source("coco81", "train", root)
    assert isinstance(train, seg.COCO81) and train.source == "panoptic" and train.num_classes == 81
    # rows: dog, person, crowd person, stuff (tree-merged), void, dog
    np.testing.assert_array_equal(train[0]["mask"][:, 0], [DOG, PERSON, PERSON, 0, 0, DOG])
    val = seg.COCO81(root, "val")  # only stuffthingmaps: dog, person, sky (stuff), unlabeled 255
    assert val.source == "stuffthingmaps"
    np.testing.assert_array_equal(val[0]["mask"][:4, 0], [DOG, PERSON, 0, 0])
    things = seg.COCOThings(root, "val")  # the shared stuffthingmaps table keeps its 255
    np.testing.assert_array_equal(things[0]["mask"][:4, 0], [1, 9, 255, 255])


def test_config_reads_coco81_and_scores_81_classes(tmp_path):
    c = comus_coco.get_config()
    assert c.discovery.n_clusters == 80 and tuple(c.self_train.epochs) == (1,)
    assert tuple(c.self_train.splits) == ("train",) and c.self_train.input_size == 256
    assert tuple(c.self_train.crop_scale) == (0.2, 1.0)
    assert scoring.num_gt_classes(c.data) == c.discovery.n_clusters + 1 == 81  # Hungarian
    c.data.root = str(_coco(tmp_path / "coco"))
    c.data.allow_missing = True  # the fake train split has an image without an annotation
    item = open_source(c.data, c.data.val_split)[0]
    np.testing.assert_array_equal(scoring.comus_gt(item["mask"], c.data)[:4, 0], [DOG, PERSON, 0, 0])
    assert (
        c.evaluation.min_labelled_pixels == 1000
        and comus_voc.get_config().evaluation.min_labelled_pixels == 0
    )
    assert comus_coco.get_config("overcluster30").discovery.n_clusters == 30


def test_discovered_category_counts():
    """Per-class IoU 40/53, 1/5, 1/10, 0 (background's false positives make the small classes'
    IoUs; identity is the Hungarian match): 2 classes with IoU >= 20 %, 3 with IoU > 0."""
    cm = np.array([[40, 4, 9, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    out = scoring.scores(cm, "hungarian")
    iou = [40 / 53, 0.2, 0.1, 0.0]
    np.testing.assert_allclose(out["per_class_iou"], iou)
    assert out["n_iou_ge_20"] == 2 and out["miou_iou_ge_20"] == pytest.approx(np.mean(iou[:2]))
    assert out["n_iou_gt_0"] == 3 and out["miou_iou_gt_0"] == pytest.approx(np.mean(iou[:3]))
