"""No silent subsets in evaluation: listed samples that cannot be used (missing image or mask,
mask of the wrong size) are counted with their reasons and stop the run unless
``data.allow_missing``; samples left out on purpose (prepare --verify's excluded.txt) do not;
a mask with values outside the dataset's labels is one error line from the CLI."""

import logging

import pytest

from configs.eval import base
from dense_jax import evaluate
from dense_jax.data import lists
from dense_jax.eval import features
from tests.core.test_errors import exit_line
from tests.data.test_segmentation import VOC_VAL, _mask, _png, _voc


def _voc_config(root, **data):
    c = base.make("kmeans", "voc", "demo")
    c.data.update(dict(base.DATASETS["voc"], root=str(root), limit_train=0, limit_val=0, **data))
    return c


def test_dropped_val_samples_stop_unless_allowed(tmp_path, caplog):
    root = _voc(tmp_path / "VOCdevkit")
    voc = root / "VOC2012"
    (voc / "SegmentationClass" / f"{VOC_VAL[1]}.png").unlink()  # missing mask
    c = _voc_config(root)
    with pytest.raises(features.MissingSamplesError) as err:
        features.open_source(c.data, "val")
    message = str(err.value)
    assert "voc val: 1 of 2 listed samples cannot be used" in message
    assert f"{VOC_VAL[1]}: missing mask file" in message and "data.allow_missing=True" in message
    c.data.allow_missing = True
    with caplog.at_level(logging.WARNING):
        assert len(features.open_source(c.data, "val")) == 1
    assert "1 of 2 listed samples cannot be used" in caplog.text


def test_excluded_samples_do_not_count_as_missing(tmp_path):
    root = _voc(tmp_path / "VOCdevkit")
    lists.write_excluded(lists.list_path(root / "dense_jax_lists", "voc", "excluded"), {VOC_VAL[0]: "bad"})
    assert len(features.open_source(_voc_config(root).data, "val")) == 1


def test_mask_with_foreign_labels_is_one_cli_line(tmp_path):
    root = _voc(tmp_path / "VOCdevkit")
    _png(root / "VOC2012" / "SegmentationClass" / f"{VOC_VAL[0]}.png", _mask(0, 50), palette=True)
    words = ("mask values [50] are not labels of", "--verify")
    exit_line(evaluate.main, _voc_config(root), str(tmp_path / "out"), words=words)
