"""Shared fixtures of the search-service tests: a tiny exported encoder, a few
images on disk with bulk encoding's ids, and their codes computed by the Keras
model itself (not by the service's path)."""

import io

import keras
import numpy as np
import pytest
from PIL import Image

import keras_hash
from keras_hash import datasets, export
from keras_hash.serve.encoder import SavedModelEncoder
from keras_hash.serve.sources import ImageCatalog

BITS = 32
SHAPE = (16, 16, 3)


def backbone():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, x)


def image_bytes(pixels: np.ndarray, form: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=form)
    return out.getvalue()


def expected_code(model, data: bytes) -> np.ndarray:
    """The code the service must find for uploaded bytes: the Keras model on
    the library's one decoder and resize (independent of the serve path)."""
    pixels = datasets.decode_image(data)
    pixels = np.asarray(datasets.resize_image(pixels, SHAPE[:2]))
    return model.encode(pixels[None])


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("serve")
    model = keras_hash.HashNet(backbone(), bits=BITS)
    model.build((None, *SHAPE))
    saved = export.export_saved_model(model, root / "models", model_name="tiny")
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / "images" / label).mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 256, SHAPE, dtype=np.uint8)
            (root / "images" / label / f"{i:02d}.png").write_bytes(image_bytes(pixels))
    catalog = ImageCatalog.from_source(str(root / "images"))
    ids = catalog.ids
    codes = np.concatenate(
        [expected_code(model, open(catalog.path(i), "rb").read()) for i in ids]
    )
    index = keras_hash.HammingIndex(BITS, backend="numpy")
    index.add(codes, ids)
    index_path = root / "db.khi"
    index.save(index_path)
    queries = [  # other sizes and formats than the database: resized on upload
        image_bytes(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8), "JPEG"),
        image_bytes(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "PNG"),
        image_bytes(rng.integers(0, 256, (9, 12), dtype=np.uint8), "BMP"),
    ]
    return {
        "root": root,
        "model": model,
        "saved_model": saved,
        "encoder": SavedModelEncoder(root / "models" / "tiny"),
        "catalog": catalog,
        "ids": ids,
        "codes": codes,
        "index_path": index_path,
        "queries": queries,
    }
