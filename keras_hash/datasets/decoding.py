"""The one image decoder: file bytes to ``uint8 [H, W, C]`` pixels, one rule.

Every path that turns a user's image file into pixels uses this module: the
in-memory loaders (:func:`keras_hash.datasets.load_image_files`), the
``tf.data`` stream (:func:`keras_hash.datasets.image_files_dataset`, through
:func:`decode_file_tensor`), bulk encoding and serving. So a model is
trained on the pixels it is later served, whatever the file holds.

The rule (Pillow decodes, then):

- **Formats**: JPEG, PNG, GIF, BMP and WebP, recognized by their content
  (not their name). Anything else (TIFF, SVG, HEIC, a text file, a
  truncated or corrupt file) is refused with a ``ValueError`` naming the
  file.
- **Orientation**: the EXIF orientation tag is applied (the picture is
  rotated and mirrored as a photo viewer shows it), then dropped.
- **Animations** (GIF, APNG, animated WebP): the first frame.
- **Alpha** (RGBA, LA, palettes with transparency): dropped; the colour
  stored under a transparent pixel is kept (no compositing on a
  background).
- **Grey** (``L``, 1-bit): copied into the three channels (1-bit as 0 and
  255). **Palettes**: looked up. **CMYK** JPEGs: Pillow's conversion
  (Adobe-inverted files handled, ICC profiles not applied).
- **16-bit samples** (16-bit PNG): the high byte, ``v // 256``.
- ``channels=1``: RGB images become grey by ITU-R 601-2 luma
  (``L = R * 299/1000 + G * 587/1000 + B * 114/1000``, Pillow's ``L``).
- **Size**: images larger than Pillow's decompression-bomb limit (about
  179 million pixels) are refused.

Resizing (:func:`resize_image`) is TensorFlow's bilinear, antialiased
resize rounded back to ``uint8``, on every path.

```python
with open("photo.jpg", "rb") as file:
    pixels = keras_hash.datasets.decode_image(file.read())  # uint8 [H, W, 3]
```
"""

from __future__ import annotations

import io
import os
import stat
import warnings

import numpy as np
import tensorflow as tf

from keras_hash.arguments import check_int

#: Formats the decoder reads (Pillow format names).
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
#: File name extensions of those formats, as listings recognize images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_GREY = ("1", "L", "LA", "La")


def decode_image(data: bytes, channels: int = 3, name: str = "image") -> np.ndarray:
    """Decodes one image file's bytes to ``uint8 [H, W, channels]`` by the one rule.

    See the module doc for the rule (formats, EXIF orientation, first frame,
    alpha dropped, 16-bit to the high byte). Raises ``ValueError`` naming
    ``name`` for anything that is not a whole image of those formats.

    ```python
    pixels = keras_hash.datasets.decode_image(request_body, name="upload")
    pixels.shape, pixels.dtype  # (480, 640, 3), uint8
    ```

    Args:
        data: the file's bytes.
        channels: 3 (RGB) or 1 (grey).
        name: what to call the image in errors (a path, an upload's name).
    """
    from PIL import Image, ImageOps

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data of {name} must be bytes, got {type(data).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette transparency notices
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                image.load()
                oriented = ImageOps.exif_transpose(image)
                return _pixels(oriented, channels, name)
    except MemoryError:
        raise
    except Exception as error:  # Pillow raises many kinds on hostile bytes
        if isinstance(error, ValueError) and str(error).startswith("Cannot read"):
            raise
        what = str(error) or type(error).__name__
        if type(error).__name__ == "UnidentifiedImageError":
            what = f"not a {', '.join(IMAGE_FORMATS[:-1])} or WebP image"
        raise ValueError(f"Cannot read image {name}: {what}") from error


def _pixels(image, channels, name):
    """Pillow image (any mode) -> ``uint8 [H, W, channels]`` by the module's rule."""
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"Cannot read image {name}: {mode} samples outside 16 bits"
            )
        grey = (values.astype(np.int64) >> 8).astype(np.uint8)
    elif mode in _GREY:
        grey = np.asarray(image.convert("L"), np.uint8)
    else:
        rgb = image.convert("RGB")
        if channels == 1:
            return np.asarray(rgb.convert("L"), np.uint8)[..., None]
        return np.asarray(rgb, np.uint8)
    if channels == 1:
        return grey[..., None]
    return np.repeat(grey[..., None], 3, axis=-1)


def read_image_bytes(path) -> bytes:
    """The bytes of an image file: a local path, or a URL TensorFlow reads (``gs://``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for
    something that is not a regular file (a folder, a FIFO, a device),
    naming it.
    """
    path = os.fspath(path)
    if "://" in path:
        try:
            with tf.io.gfile.GFile(path, "rb") as file:
                return file.read()
        except tf.errors.NotFoundError:
            raise FileNotFoundError(f"No image file {path!r}") from None
        except tf.errors.OpError as error:
            raise ValueError(f"Cannot read image {path!r}: {error.message}") from None
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"No image file {path!r}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise ValueError(f"Cannot read image {path!r}: {kind}")
    with open(path, "rb") as file:
        return file.read()


def read_image(path, channels: int = 3) -> np.ndarray:
    """Reads and decodes one image file (:func:`decode_image`'s rule), errors name it.

    ```python
    pixels = keras_hash.datasets.read_image("data/cat/0001.jpg")
    ```
    """
    return decode_image(read_image_bytes(path), channels, name=repr(os.fspath(path)))


def check_image_size(image_size):
    """``None``, or ``(height, width)`` from an int or a pair of positive ints.

    Booleans and floats raise ``TypeError`` naming ``image_size``.
    """
    if image_size is None:
        return None
    if isinstance(image_size, (str, bytes)):
        raise TypeError(f"image_size must be (height, width), got {image_size!r}")
    if np.ndim(image_size) == 0:
        side = check_int(image_size, "image_size", minimum=1)
        return side, side
    sides = tuple(image_size)
    if len(sides) != 2:
        raise ValueError(
            f"image_size must be (height, width) in pixels, got {image_size!r}"
        )
    return tuple(check_int(side, "image_size", minimum=1) for side in sides)


def resize_image(image, size):
    """Bilinear, antialiased resize of one ``uint8`` image, rounded back to uint8.

    The one resize rule: aspect ratio not kept; an image already of ``size``
    is returned unchanged.
    """
    image = tf.convert_to_tensor(image)
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))

    def resized():
        out = tf.image.resize(image, size, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    return tf.cond(same, lambda: image, resized)


def decode_file_tensor(path, size=None, channels: int = 3):
    """Graph version for ``tf.data``: a path tensor to ``uint8 [H, W, channels]``.

    Reads and decodes with :func:`read_image` (through ``tf.numpy_function``,
    so the pixels are exactly those of the in-memory loaders), then resizes
    to ``size`` (``(height, width)``) with :func:`resize_image` when given.
    An unreadable file raises ``tf.errors.InvalidArgumentError`` whose
    message names it.

    ```python
    ds = tf.data.Dataset.from_tensor_slices([b"a.jpg", b"b.png"])
    ds = ds.map(lambda p: decode_file_tensor(p, (224, 224)))
    ```
    """

    def read(path_bytes):
        return read_image(os.fsdecode(path_bytes), channels)

    image = tf.numpy_function(read, [path], tf.uint8, stateful=False)
    image.set_shape((None, None, channels))
    if size is None:
        return image
    return tf.ensure_shape(resize_image(image, size), (*size, channels))
