"""examples/encode_images_tflite.py on the class-folder layout (issue 32)."""

import os
import subprocess
import sys

import keras
import numpy as np
from PIL import Image

import keras_hash
from keras_hash import export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "examples", "encode_images_tflite.py")


def test_class_folders_are_encoded_like_the_encoder_does(tmp_path):
    # Before issue 32 the script read only flat folders and crashed here.
    backbone = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    model = keras_hash.HashNet(backbone, bits=16)
    model.build((None, 8, 8, 3))
    tflite = export.export_tflite(model, str(tmp_path / "m.tflite"))
    rng = np.random.default_rng(0)
    pixels = {}
    for name in ("cat", "dog"):
        os.makedirs(tmp_path / "photos" / name)
        for i in range(3):
            image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "photos" / name / f"{i}.png")
            pixels[f"{name}/{i}.png"] = image
    out = tmp_path / "codes.npy"
    result = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            f"--tflite={tflite}",
            f"--images={tmp_path / 'photos'}",
            f"--output={out}",
            f"--queries={tmp_path / 'photos'}",
            "--k=1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(pixels)  # sorted class folders, sorted files
    expected = model.encode(np.stack([pixels[n] for n in names]).astype(np.float32))
    np.testing.assert_array_equal(np.load(out), expected)
    assert "6 images -> 16-bit codes (2 bytes)" in result.stdout
    assert "cat/0.png: cat/0.png (0)" in result.stdout
