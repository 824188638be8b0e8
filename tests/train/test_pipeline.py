"""Training input: sources, unreadable images, per-host slicing, determinism (jax-practices §6)."""

import numpy as np
import pytest
from PIL import Image

from configs.dino_coco import get_config
from dense_jax.data import pipeline, sources
from dense_jax.train import loop


def _config(**data):
    config = get_config("smoke")
    config.data.update(data)
    return config


def _batches(config, source, n, process_index=0, process_count=1):
    config = loop.resolve_config(config, len(source))
    it = iter(pipeline.build(config, source, process_index, process_count))
    return [next(it) for _ in range(n)]


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "coco"
    folder = root / "train2017"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(9):
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), np.uint8)).save(folder / f"{i:03d}.jpg")
    (folder / "004.jpg").write_bytes(b"not a jpeg at all")  # corrupt
    Image.fromarray(rng.integers(0, 255, (30, 30), np.uint8)).save(folder / "009.png")  # greyscale
    return root


def test_corrupt_image_is_skipped_and_counted(image_folder):
    config = _config(source="folder", root=str(image_folder), max_bad_fraction=0.5)
    source = sources.training_source(config.data)
    assert len(source) == 10
    element = source[4]
    assert element["skipped"] == 1 and element["index"] == 5  # replaced by the next readable image
    assert source[9]["image"].shape == (30, 30, 3)
    batches = _batches(config, source, 2)  # one epoch: every image once
    assert sum(int(b["skipped"].sum()) for b in batches) == 1
    assert all(b["global"].shape == (8, 2, 32, 32, 3) for b in batches)

    log = loop._Logger(workdir="", images_per_step=8, bar=None)
    log.count_images(batches[0], source, max_bad_fraction=0.5)
    with pytest.raises(loop.TooManyUnreadableError, match="8 unreadable images skipped"):
        log.count_images({"index": np.arange(8), "skipped": np.full(8, 1)}, source, max_bad_fraction=0.5)


def test_one_bad_file_in_100_is_named_once_and_does_not_stop(tmp_path):
    """Three epochs over 100 files, one corrupt: the default data.max_bad_fraction keeps going
    (the file is met up to three times but counted once) and names it, with its error, in
    <workdir>/unreadable_images.txt exactly once."""
    folder = tmp_path / "coco" / "train2017"
    folder.mkdir(parents=True)
    for i in range(100):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(folder / f"{i:03d}.png")
    (folder / "042.png").write_bytes(b"broken")
    config = _config(source="folder", root=str(tmp_path / "coco"))
    source = sources.training_source(config.data)
    batches = _batches(config, source, 36)  # 3 epochs of 12 steps
    log = loop._Logger(workdir=str(tmp_path), images_per_step=8, bar=None)
    for batch in batches:
        log.count_images(batch, source, config.data.max_bad_fraction)
    assert log.skipped >= 2  # met again in a later epoch
    lines = (tmp_path / "unreadable_images.txt").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(folder / "042.png") + ": UnidentifiedImageError")
    listed = tmp_path / "unreadable_images.txt"
    assert log.unreadable.summary() == f"1 unreadable images skipped, listed in {listed}"


def test_missing_dataset_names_the_download(tmp_path):
    config = _config(source="folder", name="coco", root=str(tmp_path / "nowhere"))
    with pytest.raises(sources.DatasetNotFoundError, match="train2017.zip"):
        sources.training_source(config.data)


def test_host_slices_are_disjoint_and_rebuild_the_global_batch():
    config = _config()
    source = sources.training_source(config.data)
    whole = _batches(config, source, 2)
    hosts = [_batches(config, source, 2, p, 2) for p in range(2)]
    for step in range(2):
        ids = [h[step]["index"] for h in hosts]
        assert not set(ids[0]) & set(ids[1])
        np.testing.assert_array_equal(np.concatenate(ids), whole[step]["index"])
        np.testing.assert_array_equal(
            np.concatenate([h[step]["global"] for h in hosts]), whole[step]["global"]
        )


def test_epochs_reshuffle_drop_the_remainder_and_resume():
    config = _config(num_examples=20)  # 2 steps per epoch, 4 images dropped per epoch
    source = sources.training_source(config.data)
    config = loop.resolve_config(config, len(source))
    assert config.train.steps_per_epoch == 2
    it = iter(pipeline.build(config, source, 0, 1))
    epoch0 = np.concatenate([next(it)["index"] for _ in range(2)])
    state = it.get_state()
    epoch1 = [next(it) for _ in range(2)]
    assert len(set(epoch0)) == 16 and not np.array_equal(epoch0, np.concatenate([b["index"] for b in epoch1]))
    again = iter(pipeline.build(config, source, 0, 1))
    again.set_state(state)
    for expected in epoch1:
        got = next(again)
        np.testing.assert_array_equal(got["index"], expected["index"])
        np.testing.assert_array_equal(got["global"], expected["global"])


def test_tfds_data_source_without_tensorflow():
    tfds = pytest.importorskip("tensorflow_datasets")
    config = _config(source="tfds", tfds_name="mnist", split="train")
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        source = sources.training_source(config.data)
        batch = _batches(config, source, 1)[0]
    assert batch["global"].shape == (8, 2, 32, 32, 3)
