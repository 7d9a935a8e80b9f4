"""One served model name, one code width (issue 32): export refuses a mix."""

import keras
import pytest

import keras_hash
from keras_hash import export


def model(bits):
    backbone = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    hashed = keras_hash.HashNet(backbone, bits=bits)
    hashed.build((None, 8, 8, 3))
    return hashed


def test_a_version_of_another_code_width_is_refused(tmp_path):
    # Before: version 2 with 4-byte codes was published beside 2-byte codes.
    export.export_saved_model(model(16), tmp_path, "hashnet", version=1)
    export.export_saved_model(model(16), tmp_path, "hashnet", version=2)
    assert export.published_code_bytes(tmp_path / "hashnet") == {1: 2, 2: 2}
    with pytest.raises(ValueError, match=r"version 1: 16 bits.*version 2: 16 bits"):
        export.export_saved_model(model(32), tmp_path, "hashnet", version=3)
    assert sorted(p.name for p in (tmp_path / "hashnet").iterdir()) == ["1", "2"]
    # Another name is another model: any width.
    path = export.export_saved_model(model(32), tmp_path, "hashnet_32", version=1)
    assert export.published_code_bytes(tmp_path / "hashnet_32") == {1: 4}
    assert path == str(tmp_path / "hashnet_32" / "1")
