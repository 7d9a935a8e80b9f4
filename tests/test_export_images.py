"""The export command's images (int8 calibration, the serving client) go through
the one decoder of :mod:`keras_hash.datasets`: the same pixels as
``datasets.load_image_files`` for the kinds a user may have (issue 30, class 1).
"""

import numpy as np
import pytest
from PIL import Image

from keras_hash import datasets, export


def pixels(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_kinds(folder):
    """One file of each kind the two decoders used to disagree on."""
    deep = pixels((8, 8), 1).astype(np.uint16) * 256 + 200  # 16-bit grey PNG
    Image.fromarray(deep).save(folder / "a_sixteen_bit.png")
    Image.fromarray(pixels((14, 9, 3), 2)).convert("CMYK").save(
        folder / "b_cmyk.jpg", quality=95
    )
    rotated = Image.fromarray(pixels((10, 16, 3), 3))
    exif = rotated.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees when shown
    rotated.save(folder / "c_exif.jpg", exif=exif, quality=95)
    palette = Image.fromarray(pixels((9, 13, 4), 4), "RGBA").convert(
        "P", palette=Image.Palette.ADAPTIVE
    )
    palette.info["transparency"] = 0
    palette.save(folder / "d_palette_alpha.png", transparency=0)
    Image.fromarray(pixels((8, 8, 3), 5)).save(folder / "e_square.png")
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("size", [(8, 8), (11, 7)])
def test_read_images_gives_the_pixels_of_load_image_files(tmp_path, size):
    names = write_kinds(tmp_path)
    images, read_names = export.read_images(tmp_path, (*size, 3))
    assert list(read_names) == names
    paths = [str(tmp_path / name) for name in names]
    files = datasets.ImageFiles(paths, np.zeros(len(paths), np.int32), ["x"])
    expected = datasets.load_image_files(files, image_size=size).images
    assert images.dtype == np.float32 and images.shape == (len(names), *size, 3)
    np.testing.assert_array_equal(images, expected.astype(np.float32))
    if size == (8, 8):  # 16 bits to the high byte (Pillow's convert clips to 255)
        high = pixels((8, 8), 1).astype(np.float32)
        np.testing.assert_array_equal(images[0], np.repeat(high[..., None], 3, -1))


def test_read_images_grey_is_the_one_rules_luma(tmp_path):
    names = write_kinds(tmp_path)
    images, _ = export.read_images(tmp_path, (8, 8, 1))
    for image, name in zip(images, names, strict=True):
        rgb = datasets.read_image(tmp_path / name)
        # ITU-R 601-2 luma, the decoder's channels=1 rule, computed here.
        luma = (rgb.astype(np.int64) * [299, 587, 114]).sum(-1) // 1000
        grey = datasets.resize_image(luma.astype(np.uint8)[..., None], (8, 8))
        np.testing.assert_allclose(image, np.asarray(grey, np.float32), atol=1)


def test_read_images_refuses_non_images_by_name_and_skips_hidden(tmp_path):
    write_kinds(tmp_path)
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")
    with pytest.warns(UserWarning, match="Skipped 1 hidden"):
        images, names = export.read_images(tmp_path, (8, 8, 3))
    assert len(images) == 5 and ".DS_Store" not in names
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="notes.txt"):
        export.read_images(tmp_path, (8, 8, 3))
