"""Hash models: a feature backbone plus a hash head, trained with ``fit``.

:class:`HashModel` is the one model class; :class:`HashNet`, :class:`DHN`,
:class:`DCH`, :class:`CSQ` and :class:`DPSH` are presets of it (a loss and
a hash-layer activation, 15-30 lines each).

Why one module of about 700 lines (issue 34 asked for a reason past ~600):
it holds one idea, the Keras model of a hash method, and most of its length
is :class:`HashModel`'s own methods (``fit`` with its input checks and
precise BatchNorm hook, ``encode`` with its batching and checks,
``fit_hash_layer`` on fixed features, config round trips), which belong to
the class that Keras saves and loads. The parts with an idea of their own
already live elsewhere: the hash layer (:mod:`keras_hash.layers`), losses
(:mod:`keras_hash.losses`), BatchNorm re-estimation
(:mod:`keras_hash.batch_norm`), input checks (:mod:`keras_hash.input_checks`),
multi-worker plumbing (:mod:`keras_hash.distribute`), packing
(:mod:`keras_hash.codes`). Splitting the 20-line presets from their base
would only scatter one class over two files.

```python
model = keras_hash.HashNet(backbone, bits=64)
model.compile(optimizer="adam")
model.fit(images, labels, epochs=10)
codes = model.encode(images)  # uint8 [N, 8]
```
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_hash import batch_norm, input_checks
from keras_hash.codes import check_bits, pack_codes_tensor
from keras_hash.distribute import (
    first_local_batch,
    is_multi_worker,
    logs_for_multi_worker,
)
from keras_hash.layers import HashLayer
from keras_hash.losses import CSQLoss, DCHLoss, DHNLoss, DPSHLoss, HashNetLoss


@keras.saving.register_keras_serializable(package="keras_hash")
class HashModel(keras.Model):
    """A backbone that maps images to features, followed by a :class:`HashLayer`.

    Calling the model gives the continuous codes ``tanh(beta * z)`` that the
    pairwise losses train; :meth:`encode` gives packed binary codes. Use
    :class:`HashNet` or :class:`DHN`, or subclass and set ``default_loss``.
    A plain ``HashModel`` has no default loss: ``compile()`` then raises a
    ``ValueError`` asking for one, e.g.
    ``compile(loss=keras_hash.HashNetLoss())``. It saves and loads like the
    method classes (``model.save("m.keras")``, ``keras.saving.load_model``).

    Input contract: images ``[N, height, width, channels]`` of the
    backbone's input shape, any float or int dtype, in the value range
    ``input_range`` (``model.input_range``, saved in the config): raw pixels
    ``0..255`` for the backbones of :mod:`keras_hash.backbones` and
    ``keras.applications`` nets with their preprocessing inside. ``fit`` and
    ``encode`` refuse images outside it (e.g. ``0..1`` images for a ``0..255``
    model), images of another shape (naming the usual conversion), NaN/Inf
    images, labels missing or batches without pairs, and stop training at
    the first step whose weights turn non-finite
    (:mod:`keras_hash.input_checks`).

    ```python
    backbone = keras_hash.backbones.cifar_resnet(16, input_shape=(32, 32, 3))
    model = keras_hash.HashNet(backbone, bits=32)  # input_range (0, 255)
    model.compile(optimizer="adam")
    model.fit(images, labels, batch_size=64, epochs=3)  # uint8 or float 0..255
    codes = model.encode(images)  # uint8 [N, 4]
    ```

    Args:
        backbone: any Keras model or layer mapping a batch of images to a batch
            of feature vectors ``[N, D]``, e.g. a ``keras.applications`` net
            with ``include_top=False, pooling="avg"``. Put the preprocessing
            (rescaling, normalization) inside it so that exported models take
            raw images.
        bits: number of bits K (a multiple of 8 to :meth:`encode`).
        beta_schedule: the hash layer's schedule for ``beta``.
        normalize: batch-normalize the hash layer's ``z`` before ``tanh``
            (see :class:`keras_hash.HashLayer`). Defaults to ``True``: with
            it, HashNet and DHN with small conv backbones trained from
            scratch reach mAP 0.94 to 0.99 on scikit-learn's digits with
            Adam or SGD, against 0.10 to 0.85 without
            (``docs/defaults.md``). ``False`` is the papers' plain
            ``tanh(beta * z)``.
        flip_average: at inference, use the mean of the features of each
            image and of its left-right mirror (test-time augmentation for
            ``[N, H, W, C]`` images; it doubles the cost of encoding and of
            exported models, and is part of them). Training is unchanged.
            Defaults to ``False``.
        translate_average: at inference, also average over one-pixel
            translations (airbench's test-time augmentation): half the
            weight on the image, a quarter each on the image shifted one
            pixel down-right and one pixel up-left, the borders filled by
            reflection. With ``flip_average``, each of the three is
            mirror-averaged (six backbone passes per image), and an image
            and its mirror may then get different codes. Triples the cost
            of encoding and of exported models. Defaults to ``False``.
        precise_batch_norm: at the end of each ``fit``, re-estimate the
            moving statistics of every trainable ``BatchNormalization``
            (backbone and hash layer) from up to 200 training batches
            (:mod:`keras_hash.batch_norm`; :meth:`recompute_batch_norm` does
            it by hand). Defaults to ``True``: with Adam on
            ``keras.applications`` backbones trained from scratch, the
            moving averages lag the final weights (DHN on digits, mAP 0.77
            with them, 0.93-0.96 after; ``docs/defaults.md``).
        input_range: the value range of the images, ``"0..255"``,
            ``"0..1"``, ``"-1..1"`` or ``(low, high)``. Defaults to ``None``:
            the range the backbone's first ``Rescaling``/``Normalization``
            layer is made for, else the range of the first images ``fit``
            sees (:func:`keras_hash.input_checks.expected_range`).
    """

    default_loss = None
    #: Whether the loss learns from pairs inside a batch (fit checks for them).
    pairwise = True

    def __init__(
        self,
        backbone,
        bits: int,
        beta_schedule="hashnet",
        normalize=True,
        flip_average=False,
        translate_average=False,
        precise_batch_norm=True,
        input_range=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.layers.Layer):
            raise TypeError(
                f"backbone must be a Keras model or layer, got {type(backbone)!r}"
            )
        self.backbone = backbone
        self.bits = check_bits(bits, packed=False)
        for name, value in (
            ("flip_average", flip_average),
            ("translate_average", translate_average),
            ("precise_batch_norm", precise_batch_norm),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        self.flip_average = flip_average
        self.translate_average = translate_average
        self.precise_batch_norm = precise_batch_norm
        self.input_range = input_checks.check_input_range(
            input_range
        ) or input_checks.expected_range(backbone)
        self.hash_layer = HashLayer(
            self.bits, beta_schedule=beta_schedule, normalize=normalize, name="hash"
        )

    def build(self, input_shape):
        for name in ("flip_average", "translate_average"):
            if getattr(self, name) and len(input_shape) != 4:
                raise ValueError(
                    f"{name} needs images [N, height, width, channels], got "
                    f"input shape {tuple(input_shape)}"
                )
        if not self.backbone.built:
            self.backbone.build(input_shape)
        features = self.backbone.compute_output_shape(input_shape)
        self.hash_layer.build(features)
        self.built = True

    def call(self, inputs, training=None):
        features = self._features(inputs, training=training)
        return self.hash_layer(features, training=training)

    def features(self, images):
        """The backbone's features at inference, the hash layer's input ``[N, D]``.

        Averaged as ``flip_average`` and ``translate_average`` say. For
        analysis of what the codes keep (e.g. ``benchmarks/feature_probe.py``).

        ```python
        features = model.features(images)  # tensor [N, D]
        ```
        """
        return self._features(images, training=False)

    def code_logits(self, images):
        """The hash layer's pre-activation ``z``, float32 ``[N, bits]`` (inference)."""
        return self.hash_layer.logits(self.features(images))

    def _features(self, images, training):
        if training or not self.translate_average:
            return self._mirror_features(images, training)
        padded = ops.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        down_right = padded[:, :height, :width]
        up_left = padded[:, 2 : height + 2, 2 : width + 2]
        shifted = self._mirror_features(down_right, training) + self._mirror_features(
            up_left, training
        )
        return self._mirror_features(images, training) / 2 + shifted / 4

    def _mirror_features(self, images, training):
        features = self.backbone(images, training=training)
        if not self.flip_average or training:
            return features
        mirrored = self.backbone(ops.flip(images, axis=2), training=training)
        return (features + mirrored) / 2

    def packed_codes(self, images):
        """Packed codes as a uint8 tensor ``[N, bits // 8]``, for graphs and export."""
        return pack_codes_tensor(self.code_logits(images))

    def fit(self, *args, **kwargs):
        """``keras.Model.fit``, then precise BatchNorm statistics (see Args).

        With ``precise_batch_norm`` (the default), once the epochs ran, the
        moving statistics of every trainable ``BatchNormalization`` are
        re-estimated from up to 200 batches of the training data
        (:meth:`recompute_batch_norm`). Python generators cannot be read
        twice: with one, call :meth:`recompute_batch_norm` on other data.
        Inputs are checked first (:func:`keras_hash.input_checks.check_fit`)
        and training stops at a step that makes the weights non-finite.
        """
        bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        input_checks.check_fit(self, bound.arguments)
        bound.arguments["callbacks"] = [
            *(bound.arguments.get("callbacks") or []),
            input_checks.StopOnNonFinite(),
        ]
        history = super().fit(*bound.args[1:], **bound.kwargs)
        if self.precise_batch_norm and history.epoch:
            data = batch_norm.training_part(
                bound.arguments.get("x"), bound.arguments.get("validation_split")
            )
            if data is not None:
                self.recompute_batch_norm(
                    data, batch_size=bound.arguments.get("batch_size")
                )
        return history

    def recompute_batch_norm(self, images, batch_size=None, max_batches=None) -> int:
        """Sets BatchNorm moving statistics to those of ``images`` (PreciseBN).

        Every trainable ``BatchNormalization`` of the backbone and the hash
        layer gets the mean of its batch statistics over up to
        ``max_batches`` (default 200) batches of ``images`` under the
        current weights; ``beta`` and its step counter do not move.

        ```python
        model.recompute_batch_norm(train_images, batch_size=64)
        ```

        Args:
            images: a numpy array or tensor of images, a ``tf.data.Dataset``
                or ``keras.utils.PyDataset`` of image batches or of
                ``(images, labels)`` batches.
            batch_size: images per batch for arrays (default 32, as ``fit``).
            max_batches: batches used at most.

        Returns:
            The number of batches used.
        """

        def forward(batch):
            features = self._features(batch, training=True)
            return self.hash_layer.logits(features, training=True)

        return batch_norm.recompute_statistics(
            self,
            images,
            batch_size=32 if batch_size is None else batch_size,
            max_batches=batch_norm.MAX_BATCHES if max_batches is None else max_batches,
            forward=forward,
        )

    def compile(self, optimizer="adam", loss="auto", **kwargs):
        """Like ``keras.Model.compile``; ``loss="auto"`` uses the method's loss."""
        if isinstance(loss, str) and loss == "auto":
            if self.default_loss is None:
                raise ValueError(
                    f"{type(self).__name__} has no default loss: pass one, e.g. "
                    "compile(loss=keras_hash.HashNetLoss()), or use "
                    "keras_hash.HashNet or keras_hash.DHN"
                )
            loss = self.default_loss()
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    # Keras 3's TensorFlow trainer fails twice under a MultiWorkerMirroredStrategy
    # of 2+ workers (keras-team/keras#20585); these overrides work around it
    # and change nothing on one worker (see keras_hash.distribute).
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and is_multi_worker(strategy):
            data_batch, iterator = first_local_batch(strategy, iterator), None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, *args, **kwargs):
        return logs_for_multi_worker(super().train_step(*args, **kwargs))

    def test_step(self, *args, **kwargs):
        return logs_for_multi_worker(super().test_step(*args, **kwargs))

    def compile_from_config(self, config):
        # Keras skips this for models that override compile(); we replay it.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit_hash_layer(
        self,
        features,
        labels,
        batch_size: int = 128,
        epochs: int = 1,
        shuffle: bool = True,
        seed=None,
        **fit_kwargs,
    ):
        """Trains only the hash layer, on precomputed backbone features.

        For a frozen backbone: encode the training images once (e.g.
        ``model.backbone.predict(images)``), then train the hash layer on the
        features with the model's compiled optimizer and loss, at a small
        fraction of the cost of passing images through the backbone at each
        step. ``beta``, its step counter and the optimizer state advance as
        they would in ``fit`` on images. Batches are of ``batch_size``
        features (the last partial batch is dropped, as pairs are in-batch),
        reshuffled each epoch when ``shuffle`` (seeded by ``seed``). The
        hash layer's BatchNorm keeps its moving statistics (no
        ``precise_batch_norm`` step: the features are fixed).

        ```python
        model.backbone.trainable = False
        model.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.9))
        features = model.backbone.predict(images)
        model.fit_hash_layer(features, labels, epochs=3)
        ```

        Args:
            features: ``[N, D]`` features, ``D`` the hash layer's input size.
            labels: class ids ``[N]`` or multi-hot ``[N, C]``.
            batch_size: features per step.
            epochs: passes over the features.
            shuffle: reshuffle the features each epoch.
            seed: seed of the shuffle.
            **fit_kwargs: more ``keras.Model.fit`` arguments (``callbacks``,
                ``verbose``, ...).

        Returns:
            The ``History`` of the fit.
        """
        if not self.compiled:
            raise ValueError("compile the model before fit_hash_layer")
        features, labels = self._check_features(features, labels, int(batch_size))
        inputs = keras.Input(features.shape[1:], name="features")
        head = keras.Model(inputs, self.hash_layer(inputs), name="hash_head")
        if not self.optimizer.built:  # every trainable variable, for later fits
            self.optimizer.build(self.trainable_variables)
        head.compile(optimizer=self.optimizer, loss=self.loss)
        stream = tf.data.Dataset.from_tensor_slices((features, labels))
        if shuffle:
            stream = stream.shuffle(len(features), seed=seed)
        stream = stream.batch(int(batch_size), drop_remainder=True)
        return head.fit(
            stream.prefetch(tf.data.AUTOTUNE),
            epochs=epochs,
            shuffle=False,
            **fit_kwargs,
        )

    def _check_features(self, features, labels, batch_size):
        if not self.built:
            shape = getattr(self.backbone, "input_shape", None)
            if not isinstance(shape, tuple):
                raise ValueError(
                    "build the model (model.build(images_shape)) before fit_hash_layer"
                )
            self.build(shape)
        features = np.asarray(features, np.float32)
        labels = np.asarray(labels)
        width = self.hash_layer.kernel.shape[0]
        if features.ndim != 2 or features.shape[1] != width:
            raise ValueError(
                f"features must be [N, {width}] (the hash layer's input), got "
                f"shape {features.shape}"
            )
        if not np.isfinite(features).all():
            raise ValueError("features contain NaN or Inf")
        if len(labels) != len(features):
            raise ValueError(
                f"labels has {len(labels)} rows for {len(features)} features"
            )
        if not 1 <= batch_size <= len(features):
            raise ValueError(
                f"batch_size must be between 1 and the {len(features)} features, "
                f"got {batch_size}"
            )
        return features, labels

    def encode(self, images, batch_size: int = 256) -> np.ndarray:
        """Encodes images to packed binary codes, uint8 ``[N, bits // 8]``.

        Bit ``i`` is 1 where ``z_i >= 0``, in the bit order of
        :func:`keras_hash.pack_codes`, so the result goes straight into a
        :class:`keras_hash.HammingIndex`.

        ```python
        codes = model.encode(images)            # numpy uint8 [N, bits // 8]
        index = keras_hash.HammingIndex(model.bits)
        index.add(codes)
        ```

        Args:
            images: a numpy array or tensor ``[N, ...]`` of the model's input
                shape, or a ``tf.data.Dataset`` of image batches (or of
                ``(images, labels)`` batches).
            batch_size: batch size for arrays (ignored for datasets).

        Raises:
            ValueError: images of the wrong shape (every batch of a dataset
                is checked), or holding NaN or Inf (the message names the
                first such image): their codes would be meaningless (all
                bits equal), so corrupt images would all look alike. The
                check costs about one read of the images (see
                ``docs/guarantees.md``).
        """
        check_bits(self.bits)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(images, tf.data.Dataset):
            spec = images.element_spec
            spec = spec[0] if isinstance(spec, tuple) else spec
            if isinstance(spec, tf.TensorSpec):
                self._check_images(spec, finite=False)
            self._build_for(spec.shape)
            batches = (b[0] if isinstance(b, tuple) else b for b in images)
        else:
            images = self._check_images(images, finite=False)
            self._build_for(images.shape)
            batches = (
                images[i : i + batch_size] for i in range(0, len(images), batch_size)
            )
        encode_step = self._encode_function()
        chunks, seen = [], 0
        for batch in batches:
            batch = self._check_images(batch, first=seen)
            if not seen:
                input_checks.check_range(batch, self.input_range, "encode")
            chunks.append(encode_step(batch).numpy())
            seen += len(chunks[-1])
        if not chunks:
            return np.zeros((0, self.bits // 8), np.uint8)
        return np.concatenate(chunks, axis=0)

    def _encode_function(self):
        if getattr(self, "_encode_fn", None) is None:
            self._encode_fn = tf.function(self.packed_codes, reduce_retracing=True)
        return self._encode_fn

    def _build_for(self, images_shape):
        if not self.built:
            self.build((None, *images_shape[1:]))

    def _check_images(self, images, finite: bool = True, first: int = 0):
        """Checks the shape (and, with ``finite``, NaN/Inf) of a batch.

        ``images`` may also be a ``tf.TensorSpec`` (a dataset's element
        spec: shape only, unknown sizes pass). ``first`` is the index of the
        batch's first image, for the message.
        """
        spec = isinstance(images, tf.TensorSpec)
        if not spec and not tf.is_tensor(images):
            images = np.asarray(images)
        if spec and images.shape.rank is None:
            return images
        expected = getattr(self.backbone, "input_shape", None)
        shape = tuple(images.shape)
        known = shape  # a spec's unknown sizes are checked batch by batch
        if spec and isinstance(expected, tuple) and len(expected) == len(shape):
            known = tuple(
                w if g is None else g for w, g in zip(expected, shape, strict=True)
            )
        if isinstance(expected, tuple) and not _shape_matches(expected, known):
            raise ValueError(
                f"images have shape {shape} but the backbone expects {expected}"
                + input_checks.shape_hint(shape, expected)
            )
        if spec or not finite or len(shape) == 0:
            return images
        if tf.is_tensor(images):
            if not images.dtype.is_floating:
                return images
            axes = list(range(1, len(shape)))
            ok = tf.reduce_all(tf.math.is_finite(images), axis=axes).numpy()
        else:
            if images.dtype.kind != "f":
                return images
            ok = np.isfinite(images).all(axis=tuple(range(1, len(shape))))
        if not ok.all():
            raise ValueError(
                "images contain NaN or Inf: their codes would be meaningless "
                f"(image {first + int(np.argmin(ok))}, {int((~ok).sum())} in "
                f"this batch of {len(ok)})"
            )
        return images

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "bits": self.bits,
            "beta_schedule": keras.saving.serialize_keras_object(
                self.hash_layer.beta_schedule
            ),
            "normalize": self.hash_layer.normalize,
            "flip_average": self.flip_average,
            "translate_average": self.translate_average,
            "precise_batch_norm": self.precise_batch_norm,
            "input_range": None if self.input_range is None else list(self.input_range),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Configs without these keys were written when the default was False.
        config.setdefault("normalize", False)
        config.setdefault("precise_batch_norm", False)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        config["beta_schedule"] = keras.saving.deserialize_keras_object(
            config["beta_schedule"]
        )
        return cls(**config)


def _shape_matches(expected, shape) -> bool:
    if len(expected) != len(shape):
        return False
    return all(
        want is None or want == got
        for want, got in zip(expected[1:], shape[1:], strict=True)
    )


@keras.saving.register_keras_serializable(package="keras_hash")
class HashNet(HashModel):
    """HashNet (Cao et al., ICCV 2017): continuation hash layer + weighted loss.

    ```python
    backbone = keras.applications.ResNet50(include_top=False, pooling="avg")
    model = keras_hash.HashNet(backbone, bits=48)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    model.fit(images, labels, batch_size=64, epochs=10)
    codes = model.encode(images)  # uint8 [N, 6]
    ```

    Input: images of the backbone's input shape in ``input_range`` (raw
    pixels 0..255 for backbones that normalize inside); see
    :class:`HashModel` for the checks ``fit`` and ``encode`` make.

    Args:
        backbone: a Keras model mapping images to features ``[N, D]``, its
            preprocessing inside (e.g. ``keras.applications.EfficientNetB0(
            include_top=False, pooling="avg")``).
        bits: number of bits K (a multiple of 8 to ``encode``).
        beta_schedule: defaults to HashNet's continuation
            (``HashNetContinuation()``: 1, 0.005, 0.5, every 200 steps).
        normalize: batch-normalize ``z`` before ``tanh(beta * z)``. Defaults
            to ``True``.
        flip_average: encode from features averaged with the mirror image's.
            Defaults to ``False``.
        translate_average: also average over one-pixel translations.
            Defaults to ``False``.
        precise_batch_norm: re-estimate BatchNorm statistics at the end of
            ``fit``. Defaults to ``True``.
        input_range: the images' value range, ``"0..255"``, ``"0..1"``,
            ``"-1..1"`` or ``(low, high)``; defaults to the backbone's
            (its ``Rescaling``/``Normalization`` layer) or the first
            training batch's.
        **kwargs: ``keras.Model`` arguments (``name``, ``dtype``).
    """

    default_loss = HashNetLoss


@keras.saving.register_keras_serializable(package="keras_hash")
class DHN(HashModel):
    """DHN (Zhu et al., AAAI 2016): ``tanh`` hash layer, cross-entropy + quantization.

    ```python
    model = keras_hash.DHN(backbone, bits=48)
    model.compile(optimizer="adam")  # DHNLoss() unless told otherwise
    ```

    Args:
        backbone: a Keras model mapping images to features ``[N, D]``.
        bits: number of bits K.
        beta_schedule: defaults to ``None``, a plain ``tanh(z)``.
        **kwargs: as for :class:`HashNet` (``normalize``, ``flip_average``,
            ``translate_average``, ``precise_batch_norm``, ``input_range``,
            ``name``).
    """

    default_loss = DHNLoss

    def __init__(self, backbone, bits: int, beta_schedule=None, **kwargs):
        super().__init__(backbone, bits, beta_schedule=beta_schedule, **kwargs)


class _TanhHashModel(HashModel):
    """A method whose hash layer defaults to a plain ``tanh(z)`` (no continuation)."""

    def __init__(self, backbone, bits: int, beta_schedule=None, **kwargs):
        super().__init__(backbone, bits, beta_schedule=beta_schedule, **kwargs)


@keras.saving.register_keras_serializable(package="keras_hash")
class DCH(_TanhHashModel):
    """DCH (Cao et al., CVPR 2018): ``tanh`` codes, Cauchy cross-entropy.

    Trained with :class:`keras_hash.DCHLoss`: on
    ``d_ij = (K / 2) (1 - cos(h_i, h_j))``, the Cauchy probability
    ``p_ij = gamma / (gamma + d_ij)``, the weighted cross-entropy
    ``w_ij (s_ij log(1 + d_ij / gamma) + (1 - s_ij) log(1 + gamma / d_ij))``
    (``w_ij = |S| / |S1|`` for similar pairs, ``|S| / |S0|`` for dissimilar
    ones) plus ``lambda * log(1 + d(|h_i|, 1) / gamma)``; ``gamma = 20``,
    ``lambda = 0.1``. Made for retrieval within a small Hamming radius.

    ```python
    model = keras_hash.DCH(backbone, bits=32)
    model.compile(optimizer="adam")  # loss: DCHLoss()
    model.fit(images, labels, batch_size=64, epochs=10)
    ```

    The arguments are :class:`HashModel`'s, ``beta_schedule`` defaulting to
    ``None``: a plain ``tanh(z)``, the paper's.
    """

    default_loss = DCHLoss


@keras.saving.register_keras_serializable(package="keras_hash")
class CSQ(_TanhHashModel):
    """CSQ (Yuan et al., CVPR 2020): ``tanh`` codes pulled to hash centres.

    Trained with :class:`keras_hash.CSQLoss`, pointwise: each class has a
    ``±1`` hash centre ``c`` (rows of a Hadamard matrix and their negations
    while ``num_classes <= 2 * bits`` and ``bits`` is a power of two,
    Bernoulli(0.5) draws otherwise; see
    :func:`keras_hash.losses.hash_centers`), a multi-hot item the binarised
    centroid of its labels' centres, and the loss of a code ``h`` is
    ``mean_k BCE((c_k + 1) / 2, (h_k + 1) / 2) + lambda * mean_k (|h_k| -
    1)^2`` with ``lambda = 1e-4``.

    ```python
    model = keras_hash.CSQ(backbone, bits=64, num_classes=10)
    model.compile(optimizer="adam")  # CSQLoss(10, 64) unless told otherwise
    model.centers  # float32 [10, 64] of ±1
    ```

    Args:
        backbone: a Keras model mapping images to features ``[N, D]``.
        bits: number of bits K.
        beta_schedule: defaults to ``None``, a plain ``tanh(z)`` (the
            paper's).
        num_classes: the number of classes (required, keyword).
        center_seed: seed of random centres and of the ties of multi-hot
            centroids; saved with the model, so the centres are too.
        **kwargs: as for :class:`HashModel` (``normalize``, ...).
    """

    pairwise = False  # pointwise: no pairs needed inside a batch

    def __init__(
        self,
        backbone,
        bits: int,
        beta_schedule=None,
        *,
        num_classes: int,
        center_seed: int = 0,
        **kwargs,
    ):
        super().__init__(backbone, bits, beta_schedule=beta_schedule, **kwargs)
        loss = CSQLoss(num_classes, self.bits, seed=center_seed)  # validates
        self.num_classes, self.center_seed = loss.num_classes, loss.seed
        self.centers = loss.centers

    def default_loss(self):
        """``CSQLoss`` with the model's classes, bits and centre seed."""
        return CSQLoss(self.num_classes, self.bits, seed=self.center_seed)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "center_seed": self.center_seed,
        }


@keras.saving.register_keras_serializable(package="keras_hash")
class DPSH(_TanhHashModel):
    """DPSH (Li et al., IJCAI 2016): pairwise likelihood + quantization.

    Trained with :class:`keras_hash.DPSHLoss`:
    ``log(1 + exp(theta_ij)) - s_ij theta_ij`` on
    ``theta_ij = <u_i, u_j> / 2`` over the pairs, plus
    ``eta * ||b_i - u_i||^2`` with ``b_i = sign(u_i)``, ``eta = 0.01``. The
    paper's ``u`` is the linear output of the network; here it is the hash
    layer's ``tanh(z)`` (bounded, the bits are still ``sign(z)``).

    The arguments are :class:`HashModel`'s, ``beta_schedule`` defaulting to
    ``None`` (a plain ``tanh(z)``).

    ```python
    model = keras_hash.DPSH(backbone, bits=32)
    model.compile(optimizer="adam")  # loss: DPSHLoss()
    ```
    """

    default_loss = DPSHLoss
