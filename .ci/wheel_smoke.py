"""Smoke test of an installed keras_hash wheel, run from outside the source tree.

.ci/run builds the sdist and wheel, installs the wheel into a fresh virtual
environment (its dependencies seen from the test environment) and runs this
file there: it proves the wheel's own files work (import, a tiny fit,
encode, search, export), not the checkout's.
"""

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import export  # noqa: E402

source_tree = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
location = os.path.dirname(keras_hash.__file__)
assert not location.startswith(source_tree), f"imported the checkout: {location}"
assert location.startswith(sys.prefix), f"not the wheel in {sys.prefix}: {location}"
from keras_hash.recipes import presets  # noqa: E402  (subpackages are in the wheel)

assert presets.get("cifar10-2").bits == 64

rng = np.random.default_rng(0)
labels = np.arange(64) % 4
images = (rng.uniform(0, 40, (64, 8, 8, 3)) + 50 * labels[:, None, None, None]).astype(
    np.float32
)
backbone = keras.Sequential(
    [
        keras.Input((8, 8, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
    ]
)
model = keras_hash.HashNet(backbone, bits=16)
model.compile(optimizer=keras.optimizers.Adam(1e-2))
model.fit(images, labels, batch_size=16, epochs=3, verbose=0)
codes = model.encode(images)
assert codes.shape == (64, 2) and codes.dtype == np.uint8
index = keras_hash.HammingIndex(bits=16)
index.add(codes)
distances, ids = index.search(codes[:4], k=3)
assert (distances[:, 0] == 0).all()
with tempfile.TemporaryDirectory() as folder:
    path = export.export_saved_model(model, folder, model_name="smoke", version=1)
    tflite = export.export_tflite(model, os.path.join(folder, "smoke.tflite"))
    assert os.path.getsize(tflite) > 0
    import tensorflow as tf

    served = tf.saved_model.load(path).signatures["serving_default"]
    out = served(images=tf.constant(images))["codes"].numpy()
    np.testing.assert_array_equal(out, codes)
print(f"wheel smoke test passed: keras_hash from {location}")
