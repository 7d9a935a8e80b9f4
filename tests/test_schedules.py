import keras
import numpy as np
import pytest

from keras_hash import schedules


def reference_beta(t, init=1.0, gamma=0.005, power=0.5, step=200):
    """HashNet's Caffe/PyTorch rule: recompute every `step` iterations."""
    t = (t // step) * step
    return init * (1.0 + gamma * t) ** power


@pytest.mark.parametrize("t", [0, 1, 199, 200, 201, 1_000, 9_999, 10_000, 123_456])
def test_hashnet_continuation_matches_formula(t):
    got = float(schedules.HashNetContinuation()(t))
    assert got == pytest.approx(reference_beta(t), rel=1e-6)


def test_hashnet_continuation_at_10000_is_about_7_14():
    assert float(schedules.HashNetContinuation()(10_000)) == pytest.approx(
        np.sqrt(51.0), rel=1e-6
    )


def test_custom_parameters():
    schedule = schedules.HashNetContinuation(
        init=2.0, gamma=0.1, power=1.0, step_size=5
    )
    assert float(schedule(12)) == pytest.approx(reference_beta(12, 2.0, 0.1, 1.0, 5))


def test_constant_beta():
    assert float(schedules.ConstantBeta(3.0)(10**6)) == 3.0


@pytest.mark.parametrize(
    "identifier, expected",
    [
        (None, schedules.ConstantBeta),
        (2.5, schedules.ConstantBeta),
        ("hashnet", schedules.HashNetContinuation),
    ],
)
def test_get_resolves_identifiers(identifier, expected):
    assert isinstance(schedules.get(identifier), expected)


def test_serialization_round_trip():
    schedule = schedules.HashNetContinuation(
        init=1.5, gamma=0.01, power=0.7, step_size=3
    )
    config = keras.saving.serialize_keras_object(schedule)
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, schedules.HashNetContinuation)
    assert restored.get_config() == schedule.get_config()


@pytest.mark.parametrize(
    "kwargs", [{"init": 0.0}, {"gamma": -1.0}, {"step_size": 0}, {"power": -0.5}]
)
def test_bad_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        schedules.HashNetContinuation(**kwargs)


def test_bad_identifier_raises():
    with pytest.raises(ValueError, match="beta schedule"):
        schedules.get("fast")
    with pytest.raises(ValueError, match="positive"):
        schedules.get(-1.0)
