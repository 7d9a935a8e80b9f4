"""One tiny HashNet (16x16 RGB, 32 bits, untrained) is exported and one
pipeline run (the command line, DirectRunner, one worker) encodes a small
generated folder for every test of this package."""

import keras
import numpy as np
import pytest

import keras_hash
from keras_hash import export
from keras_hash.beam import __main__ as command
from tests.beam.helpers import BITS, SHARDS, SIZE, backbone, write_images


@pytest.fixture(scope="package")
def run(tmp_path_factory):
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("bulk")
    model = keras_hash.HashNet(backbone(), bits=BITS)
    model(np.zeros((1, SIZE, SIZE, 3), "float32"))  # builds the hash layer
    version = export.export_saved_model(model, root / "models", "tiny", version=1)
    good = write_images(root / "photos")
    out = root / "out"
    command.main(
        [
            f"--saved_model={root / 'models' / 'tiny'}",  # model folder: latest
            f"--images={root / 'photos'}",
            f"--output={out}",
            "--batch_size=8",
            f"--num_shards={SHARDS}",
            "--runner=DirectRunner",
            "--direct_num_workers=1",
        ]
    )
    return {
        "model": model,
        "root": root,
        "photos": root / "photos",
        "good": good,
        "out": out,
        "version": version,
    }
