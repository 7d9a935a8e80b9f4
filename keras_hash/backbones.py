"""Feature backbones for hashing, with the input normalization built in.

Every backbone here takes raw images (0-255, any numeric dtype) and
normalizes them itself, so the same model works on training batches and in
exported SavedModel / TFLite graphs fed with ``uint8`` pixels.
"""

from __future__ import annotations

import keras

# Channel statistics of the CIFAR-10 training set (0-255 scale).
CIFAR10_MEAN = (125.3, 123.0, 113.9)
CIFAR10_STD = (63.0, 62.1, 66.7)


def normalization(mean=CIFAR10_MEAN, std=CIFAR10_STD, name="normalize"):
    """A layer mapping raw pixels to ``(x - mean) / std`` per channel."""
    variance = [s * s for s in std]
    return keras.layers.Normalization(
        mean=list(mean), variance=variance, axis=-1, name=name
    )


def _conv_bn(x, filters, name, stride=1):
    x = keras.layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _residual(x, filters, name):
    shortcut = x
    x = _conv_bn(x, filters, f"{name}_a")
    x = _conv_bn(x, filters, f"{name}_b")
    return keras.layers.Add(name=f"{name}_add")([shortcut, x])


def cifar_resnet(
    width: int = 32,
    input_shape: tuple = (32, 32, 3),
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    dropout: float = 0.0,
    name: str = "cifar_resnet",
) -> keras.Model:
    """A small, fast ResNet for 32x32 images (the "ResNet-9" layout).

    Three stages of ``width * (2, 4, 8)`` filters, each a 3x3 convolution,
    BatchNorm, ReLU and 2x2 max-pooling; the first and last stage add a
    residual block of two such convolutions. A stem convolution of ``width``
    filters comes first, global average pooling last. At ``width=64`` this is
    the network of the DAWNBench CIFAR-10 records; ``width=32`` has a
    quarter of its multiply-adds (about 0.1 GFLOP per image) and suits a CPU.

    Raw pixels go in: the model rescales them with the per-channel ``mean``
    and ``std`` (CIFAR-10's by default) in its first layer.

    ```python
    backbone = keras_hash.backbones.cifar_resnet(width=32)
    backbone.output_shape  # (None, 256)
    model = keras_hash.HashNet(backbone, bits=48)
    ```

    Args:
        width: filters of the stem; stages use 2x, 4x and 8x. Defaults to 32.
        input_shape: image shape ``(H, W, C)``. Defaults to ``(32, 32, 3)``.
        mean: per-channel mean of the raw pixels.
        std: per-channel standard deviation of the raw pixels.
        dropout: dropout rate on the pooled features. Defaults to 0.
        name: model name.

    Returns:
        A functional ``keras.Model`` from images to ``[N, 8 * width]`` features.
    """
    if int(width) < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    inputs = keras.Input(input_shape, name="images")
    x = normalization(mean, std)(inputs)
    x = _conv_bn(x, width, "stem")
    for stage, multiple in enumerate((2, 4, 8), start=1):
        x = _conv_bn(x, width * multiple, f"stage{stage}")
        x = keras.layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
        if stage in (1, 3):
            x = _residual(x, width * multiple, f"stage{stage}_res")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, x, name=name)


def application(
    name: str,
    input_shape: tuple = (32, 32, 3),
    weights: str | None = None,
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
) -> keras.Model:
    """A ``keras.applications`` network as a backbone taking raw pixels.

    The network is built without its top, with average pooling, behind a
    per-channel normalization layer (``mean`` and ``std`` of the raw
    pixels). Its own ``preprocess_input`` is not applied: pass the
    statistics its weights expect, or train from scratch.

    ```python
    backbone = keras_hash.backbones.application("ResNet50", (64, 64, 3))
    ```

    Args:
        name: a ``keras.applications`` constructor, e.g. ``"ResNet50"``.
        input_shape: image shape ``(H, W, C)``.
        weights: ``None`` (random initialization), ``"imagenet"`` or the path
            of a weights file for the network without its top.
        mean: per-channel mean of the raw pixels.
        std: per-channel standard deviation of the raw pixels.
    """
    constructor = getattr(keras.applications, name, None)
    if constructor is None or not callable(constructor):
        raise ValueError(
            f"Unknown backbone {name!r}: not a keras.applications constructor "
            f"(e.g. 'ResNet50', 'MobileNetV2') nor a registered backbone {names()}"
        )
    net = constructor(
        include_top=False, weights=weights, input_shape=input_shape, pooling="avg"
    )
    inputs = keras.Input(input_shape, name="images")
    features = net(normalization(mean, std)(inputs))
    return keras.Model(inputs, features, name=f"{name.lower()}_backbone")


_REGISTRY = {}


def register(name: str, builder) -> None:
    """Adds a backbone builder to the registry that :func:`get` reads.

    ```python
    keras_hash.backbones.register("tiny", lambda input_shape: my_net(input_shape))
    keras_hash.backbones.get("tiny", input_shape=(32, 32, 3))
    ```

    Args:
        name: the name :func:`get` takes.
        builder: a callable returning a ``keras.Model`` from keyword
            arguments.
    """
    if not callable(builder):
        raise TypeError(f"builder for {name!r} must be callable, got {builder!r}")
    _REGISTRY[name] = builder


def names() -> tuple:
    """The registered backbone names (``keras.applications`` names also work)."""
    return tuple(sorted(_REGISTRY))


def get(name: str = "cifar_resnet", **kwargs) -> keras.Model:
    """Builds a backbone by name: a registered one or a ``keras.applications`` name.

    Registered here: ``"cifar_resnet"``; :mod:`keras_hash.recipes.airbench`
    adds ``"whitened_cnn"`` when imported. Any other name is looked up in
    ``keras.applications`` (:func:`application`).

    ```python
    keras_hash.backbones.get("cifar_resnet", width=16)
    keras_hash.backbones.get("MobileNetV2", input_shape=(64, 64, 3))
    ```

    Args:
        name: the backbone.
        **kwargs: passed to the builder (or to :func:`application`).
    """
    if not isinstance(name, str):
        raise TypeError(f"backbone name must be a str, got {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name](**kwargs)
    return application(name, **kwargs)


register("cifar_resnet", cifar_resnet)
