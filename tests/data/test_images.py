"""Images decoded as a person sees them (dense_jax/data/images.py), by every reader: EXIF
orientation, 16-bit greyscale scaled, transparency composited on white; and the training
folder's unreadable files named in the workdir."""

import numpy as np
from PIL import Image, ImageOps

from configs.dino_coco import get_config
from dense_jax.data import images, sources
from dense_jax.data import segmentation as seg
from tests.data.test_segmentation import _lines, _mask, _png

STORED = np.random.default_rng(0).integers(0, 256, (4, 6, 3), np.uint8)  # H=4, W=6 as stored


def _sideways(path, orientation=6):
    """A PNG stored 6 wide and 4 high whose EXIF says: rotate to show it (4 wide, 6 high)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(STORED)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, format="PNG", exif=exif)
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def test_exif_orientation_is_applied(tmp_path):
    upright = np.rot90(STORED, k=-1)  # orientation 6: rotate 90° clockwise to display
    for orientation, want in ((1, STORED), (6, upright), (3, STORED[::-1, ::-1])):
        path = tmp_path / f"{orientation}.png"
        _sideways(path, orientation)
        np.testing.assert_array_equal(images.decode(path), want, err_msg=str(orientation))
        with Image.open(path) as im:
            assert images.oriented_size(im) == want.shape[1::-1]


def test_training_folder_and_dataset_readers_apply_exif(tmp_path):
    want = _sideways(tmp_path / "coco" / "train2017" / "a.png")
    assert want.shape == (6, 4, 3)
    config = get_config("smoke")
    config.data.update(source="folder", root=str(tmp_path / "coco"))
    np.testing.assert_array_equal(sources.training_source(config.data)[0]["image"], want)

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    _sideways(voc / "JPEGImages" / "2007_000001.jpg")  # PNG bytes: PIL reads by content
    _png(voc / "SegmentationClass" / "2007_000001.png", _mask(0, 15, h=6, w=4), palette=True)
    _lines(voc / "ImageSets" / "Segmentation" / "val.txt", ["2007_000001"])
    _lines(voc / "ImageSets" / "Segmentation" / "train.txt", [])
    reader = seg.VOCSegmentation(tmp_path / "VOCdevkit", "val")
    assert reader.skipped == ()  # the upright size matches the mask
    np.testing.assert_array_equal(reader[0]["image"], want)

    davis = tmp_path / "DAVIS"
    _sideways(davis / "JPEGImages" / "480p" / "bear" / "00000.jpg")
    _png(davis / "Annotations" / "480p" / "bear" / "00000.png", _mask(0, 1, h=6, w=4), palette=True)
    _lines(davis / "ImageSets" / "2017" / "val.txt", ["bear"])
    video = seg.DAVIS2017(davis, "val")
    assert video.skipped == ()
    np.testing.assert_array_equal(video[0]["image"][0], want)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 4).astype(np.uint16).reshape(4, 64)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    rgb = images.decode(str(tmp_path / "g16.png"))
    assert rgb.shape == (4, 64, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], np.rint(ramp / 257).astype(np.uint8))
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and (rgb == 255).mean() < 0.05
    np.testing.assert_array_equal(images.to_rgb(ramp), rgb)  # an array decoded elsewhere (TFDS)


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere, alpha 0 / 128 / 255 along the row
    rgba[..., 3] = [0, 128, 255]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb = images.decode(str(tmp_path / "a.png")).astype(int)
    np.testing.assert_array_equal(rgb[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(rgb[0, 2], [200, 0, 0])
    assert abs(rgb[0, 1, 1] - 127) <= 1 and abs(rgb[0, 1, 0] - 227) <= 1
    assert (images.decode((tmp_path / "a.png").read_bytes()) == rgb).all()  # bytes as well
