"""The input contract of a hash model, and the checks that notice it is broken.

The silent failures of a first hour with a hash model all come from inputs
that run but mean something else:

- **pixel range**: a backbone that normalizes raw ``0..255`` pixels inside
  (``keras_hash.backbones``, ``keras.applications`` with their own
  preprocessing) given ``0..1`` images sees almost constant inputs: the
  pairwise loss stays at ``2 ln 2`` and every image gets the same code.
  :func:`expected_range` reads the range from the backbone's first
  ``Rescaling`` / ``Normalization`` layer; a model whose backbone says
  nothing learns it from the first batch it is trained on.
  :func:`check_range` refuses a batch outside it, naming the fix;
- **channels**: grayscale, RGBA or channels-first images for an RGB model
  (:func:`shape_hint` names the conversion);
- **non-finite values**: one NaN pixel turns every weight to NaN while the
  loss stays finite (ReLU hides it), and every image then gets one code.
  :class:`StopOnNonFinite` stops training at the first step whose weights
  are not finite, naming it (at most 1% of the training time:
  ``benchmarks/bench_input_checks.py``);
- **no pairs**: HashNet, DHN, DCH and DPSH learn from the pairs inside a
  batch. ``y=None``, ``batch_size < 2`` or batches without a similar pair
  leave them nothing to learn (:func:`check_pairwise`).

:class:`keras_hash.HashModel` runs these checks in ``fit`` and ``encode``.
Everything here uses ``keras.ops`` or numpy (no TensorFlow).

```python
from keras_hash import input_checks

input_checks.expected_range(keras.applications.EfficientNetB0(include_top=False))
# (0.0, 255.0)
input_checks.check_range(images / 255, (0.0, 255.0), "encode")
# ValueError: encode: images look scaled to 0..1 (max 0.996) but the model
# expects raw pixels in 0..255: pass the images unscaled (images * 255) ...
```
"""

from __future__ import annotations

import time
import warnings

import keras
import numpy as np
from keras import ops

#: Ranges a model may declare (``input_range``), by name.
NAMED_RANGES = {"0..255": (0.0, 255.0), "0..1": (0.0, 1.0), "-1..1": (-1.0, 1.0)}
#: Random batches :func:`check_pairwise` draws to look for similar pairs.
PAIR_SAMPLES = 64


def check_input_range(value) -> tuple[float, float] | None:
    """Validates a model's ``input_range`` argument: ``None``, a name of
    :data:`NAMED_RANGES` or ``(low, high)``; returns ``(low, high)`` or None."""
    if value is None:
        return None
    if isinstance(value, str):
        if value not in NAMED_RANGES:
            raise ValueError(
                f"input_range must be one of {', '.join(NAMED_RANGES)} or "
                f"(low, high), got {value!r}"
            )
        return NAMED_RANGES[value]
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"input_range must be (low, high), got {value!r}") from None
    if not low < high:
        raise ValueError(f"input_range needs low < high, got {value!r}")
    return low, high


def expected_range(backbone) -> tuple[float, float] | None:
    """The pixel range a backbone's own preprocessing is made for, if it says.

    The first ``Rescaling`` or ``Normalization`` layer decides: a scale of
    1/255 or 1/127.5, or a mean above 2, means raw ``0..255`` pixels; a
    ``Normalization`` mean within ``[0, 1]`` means ``0..1``. None when the
    backbone has neither (then :class:`keras_hash.HashModel` learns the
    range from its first training batch).
    """
    for layer in _layers(backbone):
        if isinstance(layer, keras.layers.Rescaling):
            scale = np.abs(np.asarray(layer.scale, np.float64))
            if scale.size and float(scale.max()) <= 1 / 100:
                return NAMED_RANGES["0..255"]
            return None
        if isinstance(layer, keras.layers.Normalization):
            mean = getattr(layer, "mean", None)
            if mean is None:
                return None
            mean = np.abs(np.asarray(keras.ops.convert_to_numpy(mean), np.float64))
            if mean.size and float(mean.max()) > 2:
                return NAMED_RANGES["0..255"]
            if mean.size and float(mean.max()) <= 1:
                return NAMED_RANGES["0..1"]
            return None
    return None


def _layers(model):
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        return [model]
    return list(flatten(include_self=True, recursive=True))


def batch_statistics(images) -> tuple[float, float, bool]:
    """``(min, max, has_fractions)`` of a batch of images (numpy or tensor)."""
    x = ops.convert_to_tensor(images)
    if "int" in str(x.dtype):
        return float(ops.min(x)), float(ops.max(x)), False
    x = ops.cast(x, "float32")
    finite = ops.where(ops.isfinite(x), x, ops.zeros_like(x))
    fractional = bool(ops.any(ops.not_equal(finite, ops.round(finite))))
    return float(ops.min(finite)), float(ops.max(finite)), fractional


def observed_range(images) -> tuple[float, float] | None:
    """The named range a training batch looks like, or None if unclear."""
    low, high, fractional = batch_statistics(images)
    if low >= 0 and high <= 1 and fractional:
        return NAMED_RANGES["0..1"]
    if low >= -1 and high <= 1 and low < 0:
        return NAMED_RANGES["-1..1"]
    if low >= 0 and 1 < high <= 255:
        return NAMED_RANGES["0..255"]
    return None


def check_range(images, expected, where: str) -> None:
    """Refuses a batch whose values cannot be in the ``expected`` range.

    Args:
        images: a batch (numpy or tensor).
        expected: ``(low, high)`` the model is built or trained for, or None
            (nothing to check).
        where: the call, for the message (``"fit"``, ``"encode"``).

    Raises:
        ValueError: naming the observed and expected ranges and the fix.
    """
    if expected is None:
        return
    low, high, fractional = batch_statistics(images)
    want_low, want_high = expected
    span = want_high - want_low
    if want_high > 2 and 0 < high <= 1.0 and fractional:
        raise ValueError(
            f"{where}: images look scaled to 0..1 (max {high:.3g}) but the model "
            f"expects raw pixels in {want_low:g}..{want_high:g} (its backbone "
            "normalizes them): pass the images unscaled (images * 255), or build "
            "the model with input_range='0..1' and a backbone made for 0..1"
        )
    if high > want_high + 0.5 * span or low < want_low - 0.5 * span:
        fix = "images / 255" if want_high <= 1 and high > 2 else "rescale them"
        raise ValueError(
            f"{where}: images span {low:.3g}..{high:.3g} but the model expects "
            f"{want_low:g}..{want_high:g} (input_range): {fix}, or build the "
            f"model with the input_range its backbone is made for"
        )


def shape_hint(got: tuple, want: tuple) -> str:
    """The usual conversion from images of shape ``got`` to ``want``, or ''."""
    if len(got) != 4 or len(want) != 4:
        return ""
    if got[1:3] == want[1:3] and want[3] == 3 and got[3] == 1:
        return " (grayscale images for an RGB model: np.repeat(images, 3, axis=-1))"
    if got[1:3] == want[1:3] and want[3] == 3 and got[3] == 4:
        return " (RGBA images: drop the alpha channel, images[..., :3])"
    if got[1] == want[3] and got[2:] == tuple(want[1:3]):
        return " (channels-first images: np.transpose(images, (0, 2, 3, 1)))"
    if got[3] == want[3] and got[1:3] != want[1:3]:
        return " (another image size: resize them, e.g. keras.ops.image.resize)"
    return ""


def check_pairwise(model_name: str, labels, batch_size, has_labels: bool) -> None:
    """Refuses training a pairwise method without pairs; warns on few pairs.

    Args:
        model_name: the class, for the message.
        labels: numpy labels (class ids or multi-hot) or None if unknown.
        batch_size: images per batch, or None if unknown.
        has_labels: whether labels were given at all.
    """
    explain = (
        f"{model_name} learns from the pairs inside each batch: pairs of images "
        "that share a label are pulled to nearby codes, the others pushed apart"
    )
    if not has_labels:
        raise ValueError(
            f"{model_name}.fit needs labels: {explain}. Pass y= class ids [N] or "
            "multi-hot [N, C], or a dataset of (images, labels) batches"
        )
    if batch_size is not None and int(batch_size) < 2:
        raise ValueError(
            f"batch_size={batch_size} gives no pair: {explain}. Use batch_size "
            ">= 2 (64 to 256 is usual)"
        )
    if labels is None or batch_size is None:
        return
    share = similar_pair_share(np.asarray(labels), int(batch_size))
    if share == 0:
        raise ValueError(
            f"No batch of {batch_size} images holds a similar pair (two images "
            f"sharing a label): {explain}. Are the labels one id per image? "
            "Give images of the same class the same label, or raise batch_size"
        )
    if share < 0.5:
        warnings.warn(
            f"Only {share:.0%} of random batches of {batch_size} images hold a "
            f"similar pair: {explain}, so most steps learn only to push apart. "
            "Raise batch_size (e.g. to several times the number of classes)",
            stacklevel=3,
        )


def similar_pair_share(labels: np.ndarray, batch_size: int, seed: int = 0) -> float:
    """Share of random batches of ``labels`` holding at least one similar pair."""
    if len(labels) < 2 or batch_size < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    size = min(batch_size, len(labels))
    hits = 0
    for _ in range(PAIR_SAMPLES):
        batch = labels[rng.choice(len(labels), size, replace=False)]
        if batch.ndim == 2 and batch.shape[1] > 1:  # multi-hot
            overlap = (batch > 0).astype(np.int32)
            shared = overlap @ overlap.T
            np.fill_diagonal(shared, 0)
            hits += bool(shared.any())
        else:
            hits += len(np.unique(batch.reshape(len(batch), -1), axis=0)) < size
    return hits / PAIR_SAMPLES


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first step whose weights are NaN or Inf.

    One NaN pixel (or a learning rate that diverges) makes every weight NaN
    while the reported loss may stay finite; every image then gets the same
    code. This callback checks the model's float weights (one fused
    reduction) and raises ``FloatingPointError`` naming the step, the last
    step checked finite and the first bad weight. It checks after every step
    whose cost allows it: at most ``budget`` of the training time (1%) goes
    to checks, so for models whose step costs more than ~100 checks (about
    2.5 ms for 2M weights on a 2-core CPU) every step is checked, and small
    models are checked every few steps and at each epoch's end
    (``benchmarks/bench_input_checks.py``). :class:`keras_hash.HashModel`
    adds it to every ``fit``.
    """

    def __init__(self, budget: float = 0.01):
        super().__init__()
        self.budget = float(budget)
        self._check = None

    def on_train_begin(self, logs=None):
        self._weights = [w for w in self.model.weights if "float" in str(w.dtype)]

        def all_finite(values):
            return ops.all(ops.stack([ops.all(ops.isfinite(v)) for v in values]))

        self._check = _compiled(all_finite)
        self._last_ok, self._cost, self._next = 0, 0.0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() >= self._next:
            self._verify(f"batch {batch} of this epoch")

    def on_epoch_end(self, epoch, logs=None):
        self._verify(f"end of epoch {epoch + 1}")

    def _verify(self, where: str) -> None:
        if not self._weights:
            return
        started = time.perf_counter()
        finite = bool(self._check([w.value for w in self._weights]))
        now = time.perf_counter()
        self._cost = now - started
        self._next = now + self._cost / self.budget
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations.value))
        if finite:
            self._last_ok = step
            return
        bad = next(
            w.path
            for w in self._weights
            if not np.isfinite(keras.ops.convert_to_numpy(w.value)).all()
        )
        raise FloatingPointError(
            f"Training step {step} ({where}) left the weights non-finite (first: "
            f"{bad}; finite after step {self._last_ok}): the images or labels "
            "of these steps hold NaN or Inf (check np.isfinite(images).all()), "
            "or the learning rate is too high. Every image would get the same "
            "code."
        )


def _compiled(function):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True)
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function)
    return function


def check_fit(model, arguments: dict) -> None:
    """The checks of :meth:`keras_hash.HashModel.fit` on its bound arguments.

    Arrays: labels given, ``batch_size >= 2``, similar pairs in random
    batches, shape (with the usual fix), NaN/Inf, and the pixel range against
    ``model.input_range`` (learned from the first images when None). A
    ``tf.data.Dataset``: the same on its first batch (few pairs only warn).
    """
    x, y = arguments.get("x"), arguments.get("y")
    name = type(model).__name__
    pairwise = getattr(model, "pairwise", True)
    if _is_array(x):
        batch_size = arguments.get("batch_size") or 32
        if pairwise:
            check_pairwise(name, _numpy(y), batch_size, y is not None)
        elif y is None:
            raise ValueError(f"{name}.fit needs labels y (class ids or multi-hot)")
        x = model._check_images(x)  # shape (with hint) and NaN/Inf
        sample = x[:256]
    elif _is_dataset(x):
        spec = x.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            check_pairwise(name, None, None, has_labels=False)
        images, labels = next(iter(x.take(1)))[:2]
        model._check_images(images)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one batch: a hint, not a verdict
            share = similar_pair_share(_numpy(labels), len(labels))
        if pairwise:
            check_pairwise(name, None, len(labels), True)
        if pairwise and share == 0:
            warnings.warn(
                f"The first batch of {len(labels)} images holds no similar pair: "
                f"{name} learns from pairs that share a label inside a batch. "
                "Raise the batch size or shuffle the data across classes",
                stacklevel=3,
            )
        sample = images
    else:
        return
    if model.input_range is None:
        model.input_range = observed_range(sample)
    else:
        check_range(sample, model.input_range, f"{name}.fit")


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or (
        ops.is_tensor(x) and not _is_dataset(x) and len(ops.shape(x)) > 0
    )


def _is_dataset(x) -> bool:
    """A ``tf.data.Dataset`` (read once more for its first batch)."""
    return hasattr(x, "element_spec") and hasattr(x, "take")


def _numpy(value):
    return None if value is None else np.asarray(keras.ops.convert_to_numpy(value))
