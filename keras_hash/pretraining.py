"""Pre-training a backbone as a classifier before hashing.

The papers fine-tune hash models from ImageNet-pretrained networks; from
scratch, training the backbone as a softmax classifier on the training
labels first, then hashing, does the same job. This module holds the
classifier recipe of Keller Jordan's airbench for
:func:`keras_hash.backbones.whitened_cnn` (about 87% CIFAR-10 test
accuracy after 7 epochs here, against 83% for ``cifar_resnet`` with the
hashing phase's SGD recipe).

```python
backbone = keras_hash.backbones.whitened_cnn(train_images[:5000])
classifier = keras_hash.pretraining.airbench_classifier(
    backbone, num_classes=10, total_steps=7 * len(train_images) // 1024)
classifier.fit(stream_of_1024_image_batches, ...)
keras_hash.pretraining.drop_regularizers(classifier)
hash_model = keras_hash.HashNet(backbone, bits=64)
```
"""

from __future__ import annotations

import keras

from keras_hash import backbones

# airbench94's batch and largest crop shift; its learning rate per 1024
# images, L2 and logit scale, rescaled from its summed loss to Keras's mean.
AIRBENCH_BATCH_SIZE = 1024
AIRBENCH_CROP_PADDING = 2
AIRBENCH_LEARNING_RATE = 11.5 / (1024 * (1 + 1 / (1 - 0.85))) * 1024
AIRBENCH_L2 = 0.0153 / 11.5 / 2


@keras.saving.register_keras_serializable(package="keras_hash")
class TriangularLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """``start * peak`` rising linearly to ``peak`` over the first
    ``rise_fraction`` of the steps, then falling linearly to ``end * peak``.

    The defaults are airbench's (0.2, 23%, 0.07).

    ```python
    schedule = keras_hash.pretraining.TriangularLearningRate(1.5, 100)
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
            "peak": self.peak,
            "total_steps": self.total_steps,
            "start": self.start,
            "end": self.end,
            "rise_fraction": self.rise_fraction,
        }


@keras.saving.register_keras_serializable(package="keras_hash")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Softmax cross-entropy of logits against integer labels, label-smoothed.

    The target puts ``1 - label_smoothing + label_smoothing / C`` on the
    label and ``label_smoothing / C`` on each other class (Keras's
    ``CategoricalCrossentropy(label_smoothing=...)``, which needs one-hot
    labels; ``SparseCategoricalCrossentropy`` has no smoothing).

    ```python
    loss = keras_hash.pretraining.SmoothedSparseCrossentropy(10, 0.2)
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


def airbench_classifier(
    backbone: keras.Model, num_classes: int, total_steps: int, batch_size: int = 1024
) -> keras.Model:
    """``backbone`` + a linear head, compiled with airbench94's recipe.

    Nesterov SGD with momentum 0.85 on :class:`TriangularLearningRate`
    peaking at 1.5 per 1,024 images (scaled linearly with ``batch_size``),
    label smoothing 0.2, logits scaled by 1/9, and an L2 penalty of
    ``6.65e-4 * sum(w**2)`` on every trainable variable (coupled weight
    decay: it goes through the momentum, as in PyTorch's SGD). Train it on
    batches of ``batch_size`` with crops shifted by at most
    ``AIRBENCH_CROP_PADDING`` pixels, then call :func:`drop_regularizers`
    before fine-tuning the backbone with another loss.

    Args:
        backbone: features model, e.g. :func:`keras_hash.backbones.whitened_cnn`.
        num_classes: classes of the labels.
        total_steps: training steps, for the schedule.
        batch_size: images per step. Defaults to airbench's 1,024.
    """
    head = keras.layers.Dense(
        num_classes,
        use_bias=False,
        kernel_initializer=backbones.torch_default_initializer(),
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
    schedule = TriangularLearningRate(
        AIRBENCH_LEARNING_RATE * batch_size / 1024, total_steps
    )
    classifier.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.85, nesterov=True),
        loss=SmoothedSparseCrossentropy(num_classes, label_smoothing=0.2),
        metrics=["accuracy"],
    )
    return classifier


def drop_regularizers(model: keras.Model) -> None:
    """Removes the weight penalties of every trainable variable of ``model``."""
    for variable in model.trainable_variables:
        variable.regularizer = None
