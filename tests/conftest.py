"""Test setup: two logical CPU devices (for MirroredStrategy), quiet TF logs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "numpy_only: the test builds no Keras object (no session reset)"
    )


@pytest.fixture(autouse=True)
def _fresh_keras_session(request):
    """Each Keras test starts from a clean Keras session and fixed seeds."""
    if request.node.get_closest_marker("numpy_only") is None:
        keras.backend.clear_session()
        keras.utils.set_random_seed(1234)
    yield
