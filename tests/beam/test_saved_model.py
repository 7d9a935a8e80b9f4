"""keras_hash.beam.saved_model: the SavedModel contract."""

import pytest

from keras_hash import beam
from tests.beam.helpers import BITS, SIZE


def test_saved_model_spec_and_refusals(run, tmp_path):
    assert beam.resolve_saved_model(run["root"] / "models" / "tiny") == str(
        run["version"]
    )
    spec = beam.saved_model_spec(run["version"])
    assert spec == ((SIZE, SIZE, 3), "float32", BITS)
    with pytest.raises(FileNotFoundError, match="no SavedModel"):
        beam.saved_model_spec(tmp_path)
    # a SavedModel of another contract (float output) is refused
    import tensorflow as tf

    module = tf.Module()
    module.f = tf.function(
        lambda images: {"codes": tf.reduce_sum(images, [1, 2])},
        input_signature=[tf.TensorSpec([None, 4, 4, 3], tf.float32)],
    )
    tf.saved_model.save(module, str(tmp_path / "other"), {"serving_default": module.f})
    with pytest.raises(ValueError, match="not a keras_hash SavedModel"):
        beam.saved_model_spec(tmp_path / "other")
