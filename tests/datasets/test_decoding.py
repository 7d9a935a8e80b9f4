"""The one decoder: the in-memory loader and the tf.data stream give the same
pixels, or the same refusal naming the file, for every kind of image file.

Each expected image is computed here from the pixels written (an independent
reference), not read back through keras_hash.
"""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_hash import datasets

pytestmark = pytest.mark.numpy_only
RNG = np.random.default_rng(0)


def random_pixels(shape):
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def loader_pixels(path):
    """Pixels (or the refusal) of the in-memory loader."""
    files = datasets.ImageFiles((str(path),), np.zeros(1, np.int32), ("a",))
    try:
        return datasets.load_image_files(files).images[0]
    except Exception as error:  # noqa: BLE001 - compared below
        return error


def stream_pixels(path, size):
    """Pixels (or the refusal) of the tf.data stream, at ``size``."""
    files = datasets.ImageFiles((str(path),), np.zeros(1, np.int32), ("a",))
    try:
        return next(iter(datasets.image_files_dataset(files, size)))[0][0].numpy()
    except Exception as error:  # noqa: BLE001 - compared below
        return error


def assert_both_give(path, expected):
    """Both paths decode ``path`` to exactly ``expected``."""
    from_loader = loader_pixels(path)
    assert not isinstance(from_loader, Exception), from_loader
    np.testing.assert_array_equal(from_loader, expected)
    from_stream = stream_pixels(path, expected.shape[:2])
    assert not isinstance(from_stream, Exception), from_stream
    np.testing.assert_array_equal(from_stream, expected)


def assert_both_refuse(path):
    """Both paths refuse ``path`` with an error naming it."""
    name = os.path.basename(path)
    from_loader = loader_pixels(path)
    assert isinstance(from_loader, ValueError), from_loader
    assert name in str(from_loader)
    from_stream = stream_pixels(path, (4, 4))
    assert isinstance(from_stream, tf.errors.InvalidArgumentError), from_stream
    assert name in str(from_stream)


def test_jpeg_pixels_are_the_same_on_both_paths(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(random_pixels((24, 24, 3))).save(path, quality=80)
    with Image.open(path) as image:  # libjpeg through Pillow, no conversion
        expected = np.asarray(image)
    # Before: TensorFlow's JPEG decoder differed from Pillow's by up to 5.
    assert_both_give(path, expected)


def test_sixteen_bit_grey_png_keeps_the_high_byte(tmp_path):
    values = RNG.integers(0, 65536, (6, 5), dtype=np.uint16)
    path = tmp_path / "depth.png"
    Image.fromarray(values).save(path)
    grey = (values >> 8).astype(np.uint8)
    # Before: Pillow clipped to 255, TensorFlow scaled (up to 254 apart).
    assert_both_give(path, np.repeat(grey[..., None], 3, axis=-1))


def test_sixteen_bit_rgb_png_keeps_the_high_byte(tmp_path):
    values = RNG.integers(0, 65536, (5, 4, 3), dtype=np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(tf.io.encode_png(values).numpy())
    assert_both_give(path, (values >> 8).astype(np.uint8))


def test_cmyk_jpeg_is_the_same_on_both_paths(tmp_path):
    path = tmp_path / "print.jpg"
    Image.fromarray(random_pixels((16, 16, 3))).convert("CMYK").save(path)
    with Image.open(path) as image:
        assert image.mode == "CMYK"
        expected = np.asarray(image.convert("RGB"))
    # Before: 2 levels apart.
    assert_both_give(path, expected)


@pytest.mark.parametrize("orientation, turn", [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied_on_both_paths(tmp_path, orientation, turn):
    pixels = random_pixels((4, 6, 3))
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation  # the Orientation tag
    path = tmp_path / f"phone{orientation}.png"
    image.save(path, exif=exif)
    # 3: upside down, 6: turn clockwise to view, 8: counter-clockwise.
    # Before: neither path applied it (a portrait photo stayed landscape).
    assert_both_give(path, np.rot90(pixels, turn))


def test_webp_is_read_on_both_paths(tmp_path):
    pixels = random_pixels((5, 7, 3))
    path = tmp_path / "web.webp"
    Image.fromarray(pixels).save(path, lossless=True)
    # Before: the loader read it, the stream refused it.
    assert_both_give(path, pixels)


def test_tiff_is_refused_on_both_paths_naming_it(tmp_path):
    path = tmp_path / "scan.tiff"
    Image.fromarray(random_pixels((4, 4, 3))).save(path)
    # Before: the loader read it, the stream refused it.
    assert_both_refuse(str(path))


@pytest.mark.parametrize("cut", [0.5, 0.9])
@pytest.mark.parametrize("kind", ["jpg", "png"])
def test_truncated_files_are_refused_naming_the_file(tmp_path, kind, cut):
    whole = io.BytesIO()
    Image.fromarray(random_pixels((32, 32, 3))).save(
        whole, format="PNG" if kind == "png" else "JPEG"
    )
    data = whole.getvalue()
    path = tmp_path / f"cut_{int(cut * 100)}.{kind}"
    path.write_bytes(data[: int(len(data) * cut)])
    # Before: the stream's error named no file.
    assert_both_refuse(str(path))


def test_text_and_empty_files_are_refused_naming_them(tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    assert_both_refuse(str(tmp_path / "notes.jpg"))
    assert_both_refuse(str(tmp_path / "empty.png"))


def test_alpha_grey_palette_and_one_bit_by_the_rule(tmp_path):
    rgba = random_pixels((4, 5, 4))
    la = random_pixels((4, 5, 2))
    grey = random_pixels((4, 5))
    bits = random_pixels((4, 5)) > 127
    palette = random_pixels((4, 3)).astype(np.uint8)
    index = RNG.integers(0, 4, (4, 5), dtype=np.uint8)
    pal_image = Image.fromarray(index, "P")
    pal_image.putpalette(palette.ravel().tolist())
    cases = {
        "rgba.png": (Image.fromarray(rgba, "RGBA"), rgba[..., :3], {}),
        "la.png": (Image.fromarray(la, "LA"), np.repeat(la[..., :1], 3, -1), {}),
        "grey.png": (Image.fromarray(grey), np.repeat(grey[..., None], 3, -1), {}),
        "bits.png": (
            Image.fromarray(bits),
            np.repeat(np.where(bits, 255, 0).astype(np.uint8)[..., None], 3, -1),
            {},
        ),
        "palette.png": (pal_image, palette[index], {"transparency": 1}),
        "palette.gif": (pal_image, palette[index], {}),
        "rgba.webp": (
            Image.fromarray(rgba, "RGBA"),
            rgba[..., :3],
            {"lossless": True, "exact": True},
        ),
    }
    for name, (image, expected, options) in cases.items():
        image.save(tmp_path / name, **options)
        assert_both_give(tmp_path / name, expected)


@pytest.mark.parametrize("kind", ["gif", "png"])
def test_animations_give_their_first_frame(tmp_path, kind):
    palette = random_pixels((4, 3))
    frames = []
    for _ in range(3):
        frame = Image.fromarray(RNG.integers(0, 4, (6, 6), dtype=np.uint8), "P")
        frame.putpalette(palette.ravel().tolist())
        frames.append(frame)
    first = palette[np.asarray(frames[0])]
    path = tmp_path / f"moving.{kind}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    assert_both_give(path, first)


def test_decode_image_takes_bytes_and_names_them():
    buffer = io.BytesIO()
    pixels = random_pixels((3, 4, 3))
    Image.fromarray(pixels).save(buffer, format="PNG")
    np.testing.assert_array_equal(datasets.decode_image(buffer.getvalue()), pixels)
    grey = datasets.decode_image(buffer.getvalue(), channels=1)
    # ITU-R 601-2 luma, within Pillow's integer rounding.
    luma = pixels.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert grey.shape == (3, 4, 1)
    assert np.abs(grey[..., 0] - luma).max() <= 1
    with pytest.raises(ValueError, match="upload-7"):
        datasets.decode_image(b"GIF89a garbage", name="upload-7")
    with pytest.raises(TypeError, match="bytes"):
        datasets.decode_image("photo.jpg")
    with pytest.raises(ValueError, match="channels"):
        datasets.decode_image(buffer.getvalue(), channels=4)


def test_folders_and_fifos_are_refused_without_reading(tmp_path):
    os.mkdir(tmp_path / "album.jpg")
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ValueError, match=r"album\.jpg.*a folder"):
        datasets.read_image(tmp_path / "album.jpg")
    with pytest.raises(ValueError, match=r"pipe\.png.*not a regular file"):
        datasets.read_image(tmp_path / "pipe.png")  # would block in open()
    with pytest.raises(FileNotFoundError, match=r"gone\.png"):
        datasets.read_image(tmp_path / "gone.png")


def test_resizing_is_the_same_on_both_paths(tmp_path):
    pixels = random_pixels((9, 13, 3))
    path = tmp_path / "odd.png"
    Image.fromarray(pixels).save(path)
    files = datasets.ImageFiles((str(path),), np.zeros(1, np.int32), ("a",))
    in_memory = datasets.load_image_files(files, image_size=(5, 4)).images[0]
    streamed = next(iter(datasets.image_files_dataset(files, (5, 4))))[0][0].numpy()
    np.testing.assert_array_equal(in_memory, streamed)
    reference = tf.image.resize(pixels, (5, 4), antialias=True).numpy()
    assert np.abs(in_memory - reference).max() <= 0.5 + 1e-4
