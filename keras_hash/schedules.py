"""Schedules for the scale ``beta`` of the hash layer ``tanh(beta * z)``.

HashNet trains by *continuation*: ``beta`` starts at 1 (a smooth ``tanh``)
and grows step by step so that ``tanh(beta * z)`` approaches ``sign(z)``.
A schedule maps the training step (a tensor) to ``beta`` (a tensor); the
hash layer evaluates it inside the compiled training step.

Write your own by subclassing :class:`BetaSchedule` and implementing
``__call__(step)`` and ``get_config()``.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_hash")
class BetaSchedule:
    """Base class: maps a training step to the hash layer's scale ``beta``."""

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_hash")
class ConstantBeta(BetaSchedule):
    """A fixed ``beta``: the hash layer is a plain ``tanh(beta * z)``.

    ```python
    schedule = keras_hash.schedules.ConstantBeta(1.0)
    float(schedule(10_000))  # 1.0
    ```
    """

    def __init__(self, value: float = 1.0):
        if not value > 0:
            raise ValueError(f"beta must be positive, got {value}")
        self.value = float(value)

    def __call__(self, step):
        return ops.convert_to_tensor(self.value, "float32")

    def get_config(self) -> dict:
        return {"value": self.value}


@keras.saving.register_keras_serializable(package="keras_hash")
class HashNetContinuation(BetaSchedule):
    """HashNet's continuation: ``beta = init * (1 + gamma * t) ** power``.

    ``t`` is the step rounded down to a multiple of ``step_size``, so ``beta``
    is recomputed every ``step_size`` iterations, as in the official Caffe
    and PyTorch releases. The defaults are theirs: ``beta`` is 1 at step 0
    and about 7.14 at step 10,000.

    ```python
    schedule = keras_hash.schedules.HashNetContinuation()
    float(schedule(10_000))  # 7.1414
    ```

    Args:
        init: ``beta`` at step 0. Defaults to 1.
        gamma: growth rate. Defaults to 0.005.
        power: exponent. Defaults to 0.5.
        step_size: recompute ``beta`` every this many steps. Defaults to 200.
    """

    def __init__(
        self,
        init: float = 1.0,
        gamma: float = 0.005,
        power: float = 0.5,
        step_size: int = 200,
    ):
        if not init > 0:
            raise ValueError(f"init must be positive, got {init}")
        if gamma < 0 or power < 0:
            raise ValueError(f"gamma and power must be >= 0, got {gamma}, {power}")
        if int(step_size) < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.init = float(init)
        self.gamma = float(gamma)
        self.power = float(power)
        self.step_size = int(step_size)

    def __call__(self, step):
        step = ops.cast(step, "int64")
        t = ops.cast((step // self.step_size) * self.step_size, "float32")
        return self.init * ops.power(1.0 + self.gamma * t, self.power)

    def get_config(self) -> dict:
        return {
            name: getattr(self, name)
            for name in ("init", "gamma", "power", "step_size")
        }


def get(identifier) -> BetaSchedule:
    """Resolves ``None``, a number, a config dict or a schedule to a schedule.

    ``None`` means a constant ``beta`` of 1; a number a constant ``beta``.
    """
    if identifier is None:
        return ConstantBeta(1.0)
    if isinstance(identifier, BetaSchedule):
        return identifier
    if isinstance(identifier, (int, float)) and not isinstance(identifier, bool):
        return ConstantBeta(identifier)
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if identifier == "hashnet":
        return HashNetContinuation()
    raise ValueError(
        f"Cannot interpret beta schedule {identifier!r}: pass a BetaSchedule, "
        "a positive number, 'hashnet' or None"
    )
