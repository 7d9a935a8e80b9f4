"""The hash layer: a projection to K units squashed by ``tanh(beta * z)``."""

from __future__ import annotations

import keras
from keras import ops

from keras_hash import schedules
from keras_hash.codes import check_bits


@keras.saving.register_keras_serializable(package="keras_hash")
class HashLayer(keras.layers.Layer):
    """Projects features to ``bits`` units and returns ``tanh(beta * z)``.

    ``z = x W + b``, batch-normalized by default (``normalize``). The scale
    ``beta`` is a non-trainable weight driven by a schedule of the training
    step: HashNet's continuation makes it grow
    (1 at step 0, about 7.1 at step 10,000) so that ``tanh(beta * z)`` tends
    to ``sign(z)``. The layer keeps its own step counter, advanced once per
    training call inside the compiled step, and recomputes ``beta`` from it;
    both are saved with the model, so training resumes at the ``beta`` it
    had. Outside training the last ``beta`` is used. Binary codes are
    ``sign(z)`` with ``sign(0) = +1``: see :meth:`logits` and
    :func:`keras_hash.codes.pack_codes`.

    The output is float32 even under a mixed-precision policy, since the
    pairwise losses need the precision.

    ```python
    features = keras.Input((512,))
    codes = keras_hash.HashLayer(64)(features)  # tanh(beta * BN(z)), continuation
    dhn_codes = keras_hash.HashLayer(64, beta_schedule=None)(features)  # tanh(BN(z))
    papers = keras_hash.HashLayer(64, normalize=False)(features)  # tanh(beta * z)
    ```

    Args:
        bits: number of bits K.
        beta_schedule: a :class:`keras_hash.schedules.BetaSchedule`, ``"hashnet"``
            (the default: ``HashNetContinuation()``), a positive number (a
            constant ``beta``) or ``None`` (constant 1).
        kernel_initializer: as for ``keras.layers.Dense``.
        bias_initializer: as for ``keras.layers.Dense``.
        kernel_regularizer: as for ``keras.layers.Dense``.
        normalize: batch-normalize ``z`` (a float32 ``BatchNormalization``
            sublayer: statistics of the global batch, across replicas, in
            training; moving ones at inference) before ``tanh``. On by
            default: the scale of ``tanh``'s input then
            no longer depends on the backbone's feature scale and
            initialization. On
            scikit-learn's digits with two small conv backbones trained from
            scratch (Adam 1e-3, 3e-3, SGD 0.01 with momentum; 32 bits, 20
            epochs) HashNet and DHN reach mAP 0.94 to 0.99 with it and 0.10
            to 0.85 without (DHN mostly 0.10, chance level). Where the
            backbone itself limits the codes (a MobileNet from scratch) it
            changes little either way, nor does it hurt fine-tuning a
            pre-trained backbone. See ``docs/defaults.md``. ``False``
            gives the papers' plain ``tanh(beta * z)``; configs saved
            without this key (written when ``False`` was the default) load
            with ``False``.
    """

    def __init__(
        self,
        bits: int,
        beta_schedule="hashnet",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        normalize: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.bits = check_bits(bits, packed=False)
        self.beta_schedule = schedules.get(beta_schedule)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.normalize = bool(normalize)
        self.normalization = (
            keras.layers.BatchNormalization(
                synchronized=True, dtype="float32", name="normalization"
            )
            if self.normalize
            else None
        )

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                f"HashLayer needs a known feature size, got input shape {input_shape}"
            )
        self.kernel = self.add_weight(
            shape=(features, self.bits),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=(self.bits,), initializer=self.bias_initializer, name="bias"
        )
        self.beta = self.add_weight(
            shape=(),
            initializer=self._initial_beta,
            trainable=False,
            aggregation="only_first_replica",
            name="beta",
        )
        self.iterations = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
            name="iterations",
        )
        if self.normalization is not None:
            self.normalization.build((*input_shape[:-1], self.bits))

    def _initial_beta(self, shape, dtype=None):
        return ops.cast(ops.reshape(self.beta_schedule(0), shape), dtype or "float32")

    def logits(self, inputs, training=False):
        """The pre-activation ``z`` (float32), whose sign gives the bits."""
        z = ops.matmul(inputs, ops.cast(self.kernel, inputs.dtype))
        z = ops.cast(z + ops.cast(self.bias, z.dtype), "float32")
        if self.normalization is not None:
            z = self.normalization(z, training=training)
        return z

    def call(self, inputs, training=None):
        z = self.logits(inputs, training=training)
        if training:
            beta = ops.cast(self.beta_schedule(self.iterations), "float32")
            self.beta.assign(beta)
            self.iterations.assign_add(1)
        else:
            beta = ops.cast(self.beta, "float32")
        return ops.tanh(beta * z)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.bits)

    def compute_output_spec(self, inputs, training=None):
        shape = (*inputs.shape[:-1], self.bits)
        return keras.KerasTensor(shape, dtype="float32")

    @classmethod
    def from_config(cls, config):
        # Configs without the key were written when the default was False.
        return super().from_config({"normalize": False, **config})

    def get_config(self):
        return {
            **super().get_config(),
            "bits": self.bits,
            "beta_schedule": keras.saving.serialize_keras_object(self.beta_schedule),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "normalize": self.normalize,
        }
