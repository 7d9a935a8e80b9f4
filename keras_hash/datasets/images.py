"""Users' images read into memory or streamed with ``tf.data``, decoded one way.

Both paths decode with :mod:`keras_hash.datasets.decoding` (one rule: the
same pixels, or the same refusal, for every file) and resize with its
:func:`~keras_hash.datasets.decoding.resize_image`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_hash.arguments import check_bool, check_int
from keras_hash.datasets.decoding import (
    check_image_size,
    decode_file_tensor,
    read_image,
    resize_image,
)
from keras_hash.datasets.listing import ImageFiles, list_image_folder, read_image_csv


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """Images, labels and class names read into memory.

    Attributes:
        images: ``uint8 [N, H, W, 3]`` raw RGB images.
        labels: class ids ``int32 [N]``, or multi-hot rows ``uint8 [N, C]``
            (multi-label CSVs, see :func:`read_image_csv`).
        class_names: label ``i`` (column ``i`` of multi-hot rows) is
            ``class_names[i]``.
        paths: the file of each image (empty when not read from files).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple
    paths: tuple = ()


def load_image_folder(directory: str, class_names=None, image_size=None) -> ImageFolder:
    """Reads ``directory/<class>/<image>`` into memory as ``uint8`` RGB arrays.

    Classes are the sub-directories in sorted order (label ``i`` is
    ``class_names[i]``); files are read in sorted order. All images must have
    the same size unless ``image_size`` is given. For data that does not fit
    in memory, stream it: ``image_files_dataset(list_image_folder(directory),
    image_size)``.

    ```python
    folder = keras_hash.datasets.load_image_folder("data/train")
    folder.images.shape, folder.class_names  # (N, 32, 32, 3), ('airplane', ...)
    folder = keras_hash.datasets.load_image_folder("photos", image_size=(64, 64))
    ```

    Args:
        directory: the folder holding one sub-folder per class.
        class_names: expected class names (e.g. those of the training
            folder); a folder whose classes differ is an error.
        image_size: ``(height, width)`` (or one int for squares): images of
            another size are resized to it (bilinear, antialiased, aspect
            ratio not kept), exactly as :func:`image_files_dataset` does.
            ``None`` (default): images must all have the same size.
    """
    files = list_image_folder(directory, class_names)
    return _load(files, image_size, repr(directory))


def _stack(images, where, paths):
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        first = images[0].shape
        odd = next(i for i, image in enumerate(images) if image.shape != first)
        raise ValueError(
            f"Images in {where} differ in size: {sorted(shapes)} ({paths[odd]!r} "
            f"is {images[odd].shape}, the first, {paths[0]!r}, is {first}); pass "
            "image_size=(height, width) to resize them"
        )
    return np.stack(images)


def load_image_files(files: ImageFiles, image_size=None) -> ImageFolder:
    """Reads the images of an :class:`ImageFiles` list into memory (``uint8`` RGB).

    Images are decoded by the one rule (:mod:`keras_hash.datasets.decoding`:
    grey, palette, alpha, 16-bit and CMYK images become RGB, EXIF orientation
    applied, first frame of animations) and, when
    ``image_size`` is given, those of another size are resized exactly as
    :func:`image_files_dataset` resizes them. For small data; stream larger
    data with :func:`image_files_dataset`.

    ```python
    files = keras_hash.datasets.read_image_csv("data/train.csv")
    data = keras_hash.datasets.load_image_files(files, image_size=(64, 64))
    model.fit(data.images, data.labels, batch_size=64, epochs=10)
    ```

    Args:
        files: the images and their labels.
        image_size: ``(height, width)`` (or one int for squares) to resize
            to (bilinear, antialiased, aspect ratio not kept); ``None``:
            images must all have the same size.

    Returns:
        An :class:`ImageFolder` of ``uint8 [N, H, W, 3]`` images, the labels,
        class names and paths of ``files``.
    """
    return _load(files, image_size, "the image files")


def _load(files, image_size, where):
    size = check_image_size(image_size)
    if not len(files):
        raise ValueError(f"No images to read in {where}")
    images = []
    for path in files.paths:
        image = read_image(path)
        if size is not None and image.shape[:2] != size:
            image = resize_image(image, size).numpy()
        images.append(image)
    return ImageFolder(
        _stack(images, where, files.paths), files.labels, files.class_names, files.paths
    )


def load_image_csv(
    csv_path, class_names=None, multi_hot=None, image_size=None
) -> ImageFolder:
    """Reads the images of a ``path,label[;label...]`` CSV into memory.

    :func:`read_image_csv` (format, labels, vocabulary) followed by
    :func:`load_image_files` (decoding, resizing). For data that does not
    fit in memory, stream it with :func:`image_files_dataset`.

    ```python
    data = keras_hash.datasets.load_image_csv("data/train.csv", image_size=64)
    data.images.shape, data.labels.shape  # (N, 64, 64, 3), (N, C) multi-hot
    ```

    Args:
        csv_path: the CSV file.
        class_names: the class vocabulary (see :func:`read_image_csv`).
        multi_hot: ``True``, ``False`` or ``None`` (decide from the rows).
        image_size: ``(height, width)`` (or one int) to resize images of
            another size to; ``None``: all images must have the same size.
    """
    files = read_image_csv(csv_path, class_names, multi_hot)
    return _load(files, image_size, repr(os.fspath(csv_path)))


def image_files_dataset(
    files: ImageFiles,
    image_size,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Streams an :class:`ImageFiles` list from disk: decode, resize, batch.

    Each element is ``(uint8 [B, H, W, 3], labels)``, the labels ``int32
    [B]`` class ids or ``uint8 [B, C]`` multi-hot rows as in ``files``:
    ready for ``model.fit`` of a :class:`keras_hash.HashNet` (whose loss
    takes either) and for ``model.encode`` (which ignores the labels). Only
    the batches in flight are in memory. Images are decoded exactly as
    :func:`load_image_files` decodes them (one rule:
    :mod:`keras_hash.datasets.decoding`) and those not of ``image_size`` are
    resized (bilinear, antialiased, aspect ratio not kept, rounded back to
    uint8). A missing, truncated or corrupt file, or one that is not an
    image, stops the stream with ``tf.errors.InvalidArgumentError`` naming
    the file. With ``shuffle``, the file order is reshuffled every epoch.

    ```python
    files = keras_hash.datasets.read_image_csv("nus_wide/train.csv")
    train = keras_hash.datasets.image_files_dataset(
        files, (224, 224), batch_size=64, shuffle=True, seed=0,
        drop_remainder=True)
    model.fit(train, epochs=10)
    codes = model.encode(keras_hash.datasets.image_files_dataset(files, (224, 224)))
    ```

    Args:
        files: the images and their labels (:func:`read_image_csv`,
            :func:`list_image_folder`).
        image_size: ``(height, width)``, or one int for squares.
        batch_size: images per batch.
        shuffle: shuffle the files (all of them, each epoch anew).
        seed: seed of the shuffle.
        drop_remainder: drop the last, smaller batch (training: the
            pairwise losses compare pairs within a batch).

    Returns:
        A prefetched ``tf.data.Dataset`` of ``(images, labels)`` batches.
    """
    size = check_image_size(image_size)
    if size is None:
        raise ValueError("image_size=(height, width) is needed to batch images")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    shuffle = check_bool(shuffle, "shuffle")
    drop_remainder = check_bool(drop_remainder, "drop_remainder")
    if seed is not None:
        seed = check_int(seed, "seed")
    if not len(files):
        raise ValueError("No image files to stream")
    # File names as the OS's bytes: names that are not UTF-8 survive.
    paths = [os.fsencode(path) for path in files.paths]
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string), tf.constant(files.labels))
    )
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(
        lambda path, labels: (decode_file_tensor(path, size), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)
