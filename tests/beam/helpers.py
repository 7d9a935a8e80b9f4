"""Shared by the bulk-encoding tests: a tiny model, a generated photo folder
with two bad files, and independent references (Pillow decoding through the
training loader, ``np.packbits`` of the model's own logits, ``hashlib`` ids)."""

import hashlib
import os

import keras
import numpy as np
from PIL import Image

from keras_hash import datasets

SIZE, BITS, SHARDS = 16, 32, 3
BAD = ("dogs/broken.png", "dogs/empty.jpg")


def backbone():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, x)


def write_images(root):
    """20 good PNGs in two class folders (some grey, RGBA, other sizes), 2 bad."""
    rng = np.random.default_rng(0)
    good = []
    for c, name in enumerate(("cats", "dogs")):
        os.makedirs(root / name)
        for i in range(10):
            shape = (20, 24) if i % 4 == 1 else (SIZE, SIZE)
            pixels = rng.integers(0, 256, (*shape, 4), dtype=np.uint8)
            mode = ("RGB", "L", "RGBA")[(i + c) % 3]
            image = {
                "RGB": lambda p: Image.fromarray(p[..., :3]),
                "L": lambda p: Image.fromarray(p[..., 0]),
                "RGBA": lambda p: Image.fromarray(p, "RGBA"),
            }[mode](pixels)
            image.save(root / name / f"{i:03d}.png")
            good.append(f"{name}/{i:03d}.png")
    (root / BAD[0]).write_bytes(b"not an image at all" * 10)
    (root / BAD[1]).write_bytes(b"")
    return good


def sha_id(relative):
    return int.from_bytes(hashlib.sha256(relative.encode()).digest()[:8], "big") >> 1


def reference(run):
    """``{id: code}`` from Pillow decoding and the model's own logits."""
    paths = [str(run["photos"] / r) for r in run["good"]]
    files = datasets.ImageFiles(paths, np.zeros(len(paths), np.int32), ())
    images = datasets.load_image_files(files, image_size=SIZE).images
    z = run["model"].code_logits(images.astype("float32")).numpy()
    codes = np.packbits(z >= 0, axis=-1)
    return {sha_id(r): code for r, code in zip(run["good"], codes, strict=True)}
