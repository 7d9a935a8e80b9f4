"""airbench's classifier pre-training recipe for its fast-converging CNN.

Part of :mod:`keras_hash.recipes` (not imported by ``import keras_hash``).
The papers fine-tune hash models from ImageNet-pretrained networks; from
scratch, training the backbone as a softmax classifier on the training
labels first, then hashing, does the same job. The network itself, Keller
Jordan's airbench CNN, is a product backbone
(:func:`keras_hash.backbones.whitened_cnn`), so a saved model loads with
``import keras_hash`` alone; this module holds its training recipe
(triangular learning rate, label smoothing, lookahead, coupled L2,
alternating flips): about 87% CIFAR-10 test accuracy after 7 epochs
here, against 83% for ``cifar_resnet`` with the hashing phase's SGD recipe.

```python
from keras_hash import backbones
from keras_hash.recipes import airbench

backbone = backbones.whitened_cnn(train_images[:5000])
classifier = airbench.airbench_classifier(
    backbone, num_classes=10, total_steps=7 * len(train_images) // 1024)
classifier.fit(stream_of_1024_image_batches, ...)
airbench.drop_regularizers(classifier)
hash_model = keras_hash.HashNet(backbone, bits=64)
```
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_hash.backbones import torch_default_initializer

# airbench94's batch and largest crop shift; its learning rate per 1024
# images, L2 and logit scale, rescaled from its summed loss to Keras's mean.
AIRBENCH_BATCH_SIZE = 1024
AIRBENCH_CROP_PADDING = 2
AIRBENCH_LEARNING_RATE = 11.5 / (1024 * (1 + 1 / (1 - 0.85))) * 1024
AIRBENCH_L2 = 0.0153 / 11.5 / 2


def alternating_flips(epoch, index, seed):
    """airbench's flips: a seeded coin per image in epoch 0, the other side next.

    Image ``i`` is flipped in ``epoch`` when ``first(i) + epoch`` is odd,
    where ``first(i)`` is a bit of a 32-bit integer hash of ``(i, seed)``: so
    every pair of epochs shows both orientations of every image, and a
    resumed stream gives the same flips. A ``flip`` for
    :func:`keras_hash.datasets.train_dataset`.

    ```python
    ds = keras_hash.datasets.train_dataset(x, y, 1024, 8, flip=alternating_flips)
    ```
    """
    x = tf.cast(index, tf.int64) + tf.cast(seed, tf.int64) * 0x10001 + 0x666C6970
    x = tf.bitwise.bitwise_and(x, 0xFFFFFFFF)
    for _ in range(2):  # a 32-bit integer hash (xor-shift, multiply)
        x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16)) * 0x45D9F3B
        x = tf.bitwise.bitwise_and(x, 0xFFFFFFFF)
    first = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16)) % 2
    return (first + tf.cast(epoch, tf.int64)) % 2


# airbench's crops read a mirrored border, and each image's flip alternates
# between epochs (keras_hash.datasets.train_dataset arguments).
AIRBENCH_AUGMENTATION = {"padding_mode": "reflect", "flip": alternating_flips}


@keras.saving.register_keras_serializable(package="keras_hash")
class TriangularLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """``start * peak`` rising linearly to ``peak`` over the first
    ``rise_fraction`` of the steps, then falling linearly to ``end * peak``.

    The defaults are airbench's (0.2, 23%, 0.07).

    ```python
    schedule = airbench.TriangularLearningRate(1.5, 100)
    float(schedule(0)), float(schedule(23)), float(schedule(100))
    # (0.3, 1.5, 0.105)
    ```
    """

    def __init__(
        self,
        peak: float,
        total_steps: int,
        start: float = 0.2,
        end: float = 0.07,
        rise_fraction: float = 0.23,
    ):
        if not peak > 0:
            raise ValueError(f"peak must be positive, got {peak}")
        if int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0 <= rise_fraction < 1:
            raise ValueError(f"rise_fraction must be in [0, 1), got {rise_fraction}")
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.start = float(start)
        self.end = float(end)
        self.rise_fraction = float(rise_fraction)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        rise = max(int(self.rise_fraction * self.total_steps), 1)
        fall = max(self.total_steps - rise, 1)
        up = self.start + (1.0 - self.start) * step / rise
        down = 1.0 - (1.0 - self.end) * keras.ops.minimum(step - rise, fall) / fall
        return self.peak * keras.ops.where(step < rise, up, down)

    def get_config(self) -> dict:
        return {
            name: getattr(self, name)
            for name in ("peak", "total_steps", "start", "end", "rise_fraction")
        }


@keras.saving.register_keras_serializable(package="keras_hash")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Softmax cross-entropy of logits against integer labels, label-smoothed.

    The target puts ``1 - label_smoothing + label_smoothing / C`` on the
    label and ``label_smoothing / C`` on each other class (Keras's
    ``CategoricalCrossentropy(label_smoothing=...)``, which needs one-hot
    labels; ``SparseCategoricalCrossentropy`` has no smoothing).

    ```python
    loss = airbench.SmoothedSparseCrossentropy(10, 0.2)
    loss([3], [[0.0] * 10])  # log(10)
    ```
    """

    def __init__(self, num_classes: int, label_smoothing: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(
                f"label_smoothing must be in [0, 1), got {label_smoothing}"
            )
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        one_hot = keras.ops.one_hot(labels, self.num_classes)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=True, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
        }


@keras.saving.register_keras_serializable(package="keras_hash")
class LookaheadSGD(keras.optimizers.SGD):
    """SGD whose weights are pulled back to a slow copy every ``period`` steps.

    Lookahead (Zhang et al., 2019) on Keras's optimizer EMA hooks, with
    airbench's schedule: every ``period`` steps the slow copy moves to
    ``slow + (1 - decay) * (w - slow)`` and the weights ``w`` are reset to
    it, where ``decay = max_decay * (step / total_steps) ** 3`` grows from
    0 to ``max_decay`` (``0.95 ** 5``). Until the first such step the slow
    copy follows the weights. The slow copy is optimizer state, so it is
    saved and restored with the optimizer; :meth:`finalize_variable_values`
    (called by ``fit`` when it ends) sets the weights to the slow copy only
    once ``total_steps`` are done. (``tensorflow_addons.optimizers.Lookahead``
    does not work with Keras 3.)

    ```python
    optimizer = airbench.LookaheadSGD(
        0.1, total_steps=500, momentum=0.85, nesterov=True)
    ```

    Args:
        learning_rate: float or schedule, as for ``keras.optimizers.SGD``.
        total_steps: training steps, for the decay schedule.
        period: steps between slow-copy updates. Defaults to 5.
        max_decay: the decay at ``total_steps``. Defaults to ``0.95 ** 5``.
        **kwargs: ``keras.optimizers.SGD`` arguments (``momentum``,
            ``nesterov``, ...), except the EMA ones.
    """

    def __init__(
        self,
        learning_rate=0.01,
        total_steps: int = 1,
        period: int = 5,
        max_decay: float = 0.95**5,
        **kwargs,
    ):
        for name in ("use_ema", "ema_momentum", "ema_overwrite_frequency"):
            kwargs.pop(name, None)  # set here; present in get_config()
        if int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if int(period) < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        if not 0 <= max_decay < 1:
            raise ValueError(f"max_decay must be in [0, 1), got {max_decay}")
        super().__init__(learning_rate, use_ema=True, **kwargs)
        self.total_steps = int(total_steps)
        self.period = int(period)
        self.max_decay = float(max_decay)

    def _update_model_variables_moving_average(self, trainable_variables):
        # Called after each update, before ``iterations`` counts it. Both
        # moves are blends (by 0 or 1 off the period) rather than Keras's
        # ``ema_overwrite_frequency``, whose conditional overwrite fails
        # under tf.distribute strategies (a merge_call inside a cond).
        step = keras.ops.cast(self.iterations + 1, "float32")
        progress = keras.ops.minimum(step / self.total_steps, 1.0)
        decay = self.max_decay * progress**3
        on_period = keras.ops.equal((self.iterations + 1) % self.period, 0)
        rate = keras.ops.where(
            step <= self.period, 1.0, keras.ops.where(on_period, 1.0 - decay, 0.0)
        )
        pull = keras.ops.cast(on_period, "float32")

        def move_slow(slow, variable):
            slow.assign(slow + tf.cast(rate, slow.dtype) * (variable - slow))

        def pull_back(variable, slow):
            variable.assign(
                variable + tf.cast(pull, variable.dtype) * (slow - variable)
            )

        def update(distribution, pairs):
            for variable, slow in pairs:
                distribution.extended.update(slow, move_slow, (variable,), group=False)
                distribution.extended.update(variable, pull_back, (slow,), group=False)

        pairs = [
            (_tf_variable(variable), _tf_variable(slow))
            for variable, slow in zip(
                trainable_variables, self._model_variables_moving_average, strict=True
            )
            if slow is not None
        ]
        tf.__internal__.distribute.interim.maybe_merge_call(
            update, self._distribution_strategy, pairs
        )

    def finalize_variable_values(self, var_list):
        if int(keras.ops.convert_to_numpy(self.iterations)) >= self.total_steps:
            super().finalize_variable_values(var_list)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "total_steps": self.total_steps,
            "period": self.period,
            "max_decay": self.max_decay,
        }


def _tf_variable(variable):
    """The ``tf.Variable`` behind a Keras variable (what tf.distribute updates)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def airbench_classifier(
    backbone: keras.Model, num_classes: int, total_steps: int, batch_size: int = 1024
) -> keras.Model:
    """``backbone`` + a linear head, compiled with airbench94's recipe.

    Nesterov SGD with momentum 0.85 and airbench's lookahead
    (:class:`LookaheadSGD`) on :class:`TriangularLearningRate` peaking at
    1.5 per 1,024 images (scaled linearly with ``batch_size``), label
    smoothing 0.2, logits scaled by 1/9, and an L2 penalty of
    ``6.65e-4 * sum(w**2)`` on every trainable variable (coupled weight
    decay: it goes through the momentum, as in PyTorch's SGD). Train it on
    batches of ``batch_size`` with crops shifted by at most
    ``AIRBENCH_CROP_PADDING`` pixels and ``AIRBENCH_AUGMENTATION`` (for
    :func:`keras_hash.datasets.train_dataset`), then call
    :func:`drop_regularizers` before fine-tuning the backbone with another
    loss.

    Args:
        backbone: features model, e.g. :func:`keras_hash.backbones.whitened_cnn`.
        num_classes: classes of the labels.
        total_steps: training steps, for the schedule.
        batch_size: images per step. Defaults to airbench's 1,024.
    """
    head = keras.layers.Dense(
        num_classes,
        use_bias=False,
        kernel_initializer=torch_default_initializer(),
        name="logits",
    )
    classifier = keras.Sequential(
        [backbone, head, keras.layers.Rescaling(1 / 9, name="logit_scale")],
        name="classifier",
    )
    classifier.build(backbone.input_shape)
    l2 = keras.regularizers.L2(AIRBENCH_L2)
    for variable in classifier.trainable_variables:
        variable.regularizer = l2
    compile_airbench(classifier, num_classes, total_steps, batch_size)
    return classifier


def compile_airbench(
    classifier: keras.Model, num_classes: int, total_steps: int, batch_size: int = 1024
) -> None:
    """(Re)compiles ``classifier`` with airbench94's optimizer and loss.

    A new :class:`LookaheadSGD` on a new :class:`TriangularLearningRate`
    over ``total_steps`` (state and step count start afresh) and the label-
    smoothed loss of :func:`airbench_classifier`; weights and penalties are
    left as they are. Use it to train a classifier again on other data.

    ```python
    compile_airbench(classifier, num_classes=10, total_steps=4 * 34)
    ```
    """
    schedule = TriangularLearningRate(
        AIRBENCH_LEARNING_RATE * batch_size / 1024, total_steps
    )
    optimizer = LookaheadSGD(
        schedule, total_steps=total_steps, momentum=0.85, nesterov=True
    )
    classifier.compile(
        optimizer=optimizer,
        loss=SmoothedSparseCrossentropy(num_classes, label_smoothing=0.2),
        metrics=["accuracy"],
    )


def drop_regularizers(model: keras.Model) -> None:
    """Removes the weight penalties of every trainable variable of ``model``."""
    for variable in model.trainable_variables:
        variable.regularizer = None

