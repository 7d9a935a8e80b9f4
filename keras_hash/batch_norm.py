"""Precise BatchNormalization statistics, re-estimated after training.

BatchNormalization normalizes by the batch's statistics in training and by
exponential moving averages of them at inference. When the weights still
move at the end of training (Adam on a network trained from scratch), the
averages lag the final weights and inference features drift from the
trained ones. PreciseBN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm",
2021) replaces each layer's averages by the plain mean of its batch
statistics under the final weights, over some training batches.

On scikit-learn's digits, DHN with ``keras.applications`` backbones trained
from scratch gets mAP 0.77 (MobileNet) and 0.77 (EfficientNetB0) with the
moving averages and 0.93 and 0.96 with precise statistics, same weights
(``docs/defaults.md``). :class:`keras_hash.HashModel` does this at the end
of ``fit`` by default (``precise_batch_norm=True``).

Layers whose ``trainable`` is ``False`` (a frozen backbone) keep their
statistics: Keras runs them in inference mode.

This module is the one owner of when and from what the statistics are
re-estimated: :func:`training_part` (the part of ``fit``'s ``x`` that
trained, as Keras splits off ``validation_split``) for ``HashModel.fit``,
and :func:`once_after` for loops of several ``fit`` calls (a resumable
run), which re-estimates once at their end instead of after each call.

```python
from keras_hash import batch_norm

batches = batch_norm.recompute_statistics(model, images, batch_size=32)
with batch_norm.once_after(model, lambda: train_stream):
    for chunk in chunks:
        model.fit(chunk)
```
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

#: Batches a re-estimate uses at most (PreciseBN: a few thousand images do).
MAX_BATCHES = 200
#: What ``recompute_statistics`` reads (a Python generator cannot be re-read).
DATA_TYPES = (np.ndarray, tf.Tensor, tf.data.Dataset, keras.utils.PyDataset)


def training_part(data, validation_split=None):
    """What ``fit(x=data, validation_split=...)`` trained on, or ``None``.

    Keras holds out the last ``validation_split`` fraction of array inputs
    (``floor(n * (1 - validation_split))`` training rows); datasets are not
    split. ``None`` for data a re-estimate cannot read again (not one of
    :data:`DATA_TYPES`, e.g. a Python generator).

    ```python
    batch_norm.training_part(np.zeros((10, 4)), validation_split=0.25).shape
    # (7, 4)
    ```
    """
    if not isinstance(data, DATA_TYPES):
        return None
    if validation_split and isinstance(data, (np.ndarray, tf.Tensor)):
        data = data[: int(np.floor(len(data) * (1.0 - validation_split)))]
    return data


@contextlib.contextmanager
def once_after(model, data):
    """Defers a model's precise BatchNorm to one re-estimate when the block ends.

    Inside, ``model.precise_batch_norm`` is off (each ``fit`` call leaves
    the statistics alone); when the block ends normally, it is restored and,
    if it was on, ``model.recompute_batch_norm(data())`` runs once. After an
    error the flag is restored and nothing is re-estimated.

    ```python
    with batch_norm.once_after(model, lambda: dataset(0)):
        model.fit(dataset(step), epochs=1)
        model.fit(dataset(step + 100), epochs=1)
    ```

    Args:
        model: a :class:`keras_hash.HashModel` (or any model with
            ``precise_batch_norm`` and ``recompute_batch_norm``; others are
            left alone).
        data: a callable returning what ``recompute_batch_norm`` reads.
    """
    precise = bool(getattr(model, "precise_batch_norm", False))
    if precise:
        model.precise_batch_norm = False
    try:
        yield
    finally:
        if precise:
            model.precise_batch_norm = True
    if precise:
        model.recompute_batch_norm(data())


def trainable_batch_norms(model) -> list:
    """The ``BatchNormalization`` layers in ``model`` that update statistics."""
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


def recompute_statistics(
    model,
    data,
    *,
    batch_size: int = 32,
    max_batches: int = MAX_BATCHES,
    forward=None,
) -> int:
    """Sets moving means and variances to the mean of the batch statistics.

    Runs ``forward`` (default ``model(images, training=True)``) on up to
    ``max_batches`` batches of ``data`` and leaves, in every trainable
    ``BatchNormalization`` layer, the mean over those batches of the batch
    means and of the batch variances. Nothing else changes: momenta are
    restored, no optimizer step runs; an error part-way (a bad batch) leaves
    the statistics as they were. ``forward`` runs as a ``tf.function``.

    Args:
        model: the Keras model whose layers to update.
        data: images as a numpy array or tensor (batched here, a last
            partial batch dropped when there is a full one), a
            ``tf.data.Dataset`` or a ``keras.utils.PyDataset`` of batches
            (elements ``images`` or tuples ``(images, labels, ...)``).
        batch_size: images per batch, for arrays.
        max_batches: batches used at most.
        forward: ``forward(images)`` runs the model in training mode; for
            models whose training call has other effects (a step counter).

    Returns:
        The number of batches used (0 when there is no such layer).
    """
    for name, value in (("batch_size", batch_size), ("max_batches", max_batches)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    layers = trainable_batch_norms(model)
    if not layers:
        return 0
    if forward is None:

        def forward(images):
            return model(images, training=True)

    # Momentum 0 makes each compiled forward pass leave the batch's
    # statistics in the moving variables; they are summed here.
    step = tf.function(forward, reduce_retracing=True)
    momenta = [layer.momentum for layer in layers]
    before = [_statistics(layer) for layer in layers]
    sums = [
        (np.zeros_like(m, np.float64), np.zeros_like(v, np.float64)) for m, v in before
    ]
    count = 0
    try:
        for layer in layers:
            layer.momentum = 0.0
        for images in _image_batches(data, int(batch_size), int(max_batches)):
            step(images)
            count += 1
            for (mean, variance), layer in zip(sums, layers, strict=True):
                batch_mean, batch_variance = _statistics(layer)
                mean += batch_mean
                variance += batch_variance
        if not count:
            raise ValueError("data gave no batch to estimate statistics from")
    except BaseException:
        for layer, (mean, variance) in zip(layers, before, strict=True):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        raise
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    for layer, (mean, variance) in zip(layers, sums, strict=True):
        layer.moving_mean.assign((mean / count).astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(
            (variance / count).astype(layer.moving_variance.dtype)
        )
    return count


def _statistics(layer):
    return layer.moving_mean.numpy(), layer.moving_variance.numpy()


def _image_batches(data, batch_size, max_batches):
    if isinstance(data, tf.data.Dataset):
        elements = data.take(max_batches)
    elif isinstance(data, keras.utils.PyDataset):
        total = data.num_batches
        count = max_batches if total is None else min(total, max_batches)
        elements = (data[i] for i in range(count))
    elif isinstance(data, (np.ndarray, tf.Tensor)):
        full = len(data) // batch_size
        count = min(max(full, 1), max_batches)
        elements = (data[i * batch_size : (i + 1) * batch_size] for i in range(count))
    else:  # not one of DATA_TYPES
        raise TypeError(
            "data must be a numpy array, a tensor, a tf.data.Dataset or a "
            f"keras.utils.PyDataset, got {type(data).__name__}"
        )
    for element in elements:
        yield element[0] if isinstance(element, (tuple, list)) else element
