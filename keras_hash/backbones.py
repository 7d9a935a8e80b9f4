"""Feature backbones for hashing, with the input normalization built in.

Every backbone here takes raw images (0-255, any numeric dtype) and
normalizes them itself, so the same model works on training batches and in
exported SavedModel / TFLite graphs fed with ``uint8`` pixels:
:func:`cifar_resnet` (a small ResNet), :func:`whitened_cnn` (airbench's
CNN; its training recipe is in :mod:`keras_hash.recipes.airbench`) and
:func:`application` (a ``keras.applications`` network behind the
preprocessing its weights expect). Their layers are registered with Keras
serialization here, so a saved model loads after ``import keras_hash``.

```python
backbone = keras_hash.backbones.get("whitened_cnn", whitening_images=x[:5000])
```
"""

from __future__ import annotations

import keras
import numpy as np

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


# How each keras.applications family expects its input, by the module that
# defines it (its ``preprocess_input``; Keras 3 source):
#   "caffe": RGB -> BGR, minus the ImageNet channel means, no scaling;
#   "tf": x / 127.5 - 1; "torch": x / 255, minus the ImageNet means, over
#   their standard deviations; "inside": the network rescales 0-255 pixels
#   itself (its preprocess_input passes them through).
PREPROCESSING = {
    "resnet": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet_v2": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "xception": "tf",
    "nasnet": "tf",
    "densenet": "torch",
    "convnext": "inside",
    "efficientnet": "inside",
    "efficientnet_v2": "inside",
    "mobilenet_v3": "inside",
}
# ImageNet channel statistics, RGB, 0-1 scale ("torch") and BGR, 0-255 ("caffe").
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="keras_hash")
class ReverseChannels(keras.layers.Layer):
    """Reverses the last axis: RGB images in, BGR out (Caffe-trained weights)."""

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=-1)


def preprocessing(mode: str, channels: int = 3) -> list:
    """The layers mapping raw 0-255 pixels to what a ``mode`` network expects.

    ``mode`` is a value of :data:`PREPROCESSING` (``"caffe"``, ``"tf"``,
    ``"torch"`` or ``"inside"``, which needs no layer).

    ```python
    layers = keras_hash.backbones.preprocessing("tf")  # [Rescaling(x/127.5 - 1)]
    ```
    """
    if mode == "inside":
        return []
    if mode == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")]
    if mode not in ("caffe", "torch"):
        raise ValueError(f"unknown preprocessing mode {mode!r}")
    if channels != 3:
        raise ValueError(
            f"{mode!r} preprocessing uses ImageNet's 3 channel means, the input "
            f"has {channels} channel(s): pass mean and std"
        )
    if mode == "caffe":
        return [
            ReverseChannels(name="to_bgr"),
            normalization(CAFFE_MEAN_BGR, (1.0, 1.0, 1.0), name="preprocess"),
        ]
    mean = [255.0 * m for m in IMAGENET_MEAN]
    return [normalization(mean, [255.0 * s for s in IMAGENET_STD], "preprocess")]


def application(
    name: str,
    input_shape: tuple = (32, 32, 3),
    weights: str | None = None,
    mean=None,
    std=None,
) -> keras.Model:
    """A ``keras.applications`` network as a backbone taking raw pixels.

    The network is built without its top, with average pooling, behind the
    input preprocessing its family's ``preprocess_input`` does
    (:data:`PREPROCESSING`: e.g. ``x / 127.5 - 1`` for MobileNetV2, BGR
    minus the ImageNet means for ResNet50; none for EfficientNet, ConvNeXt
    and MobileNetV3, which rescale raw pixels inside), so ``"imagenet"``
    weights see the inputs they were trained on. With ``mean`` and ``std``
    the input is normalized by those instead (for weights trained so).

    ```python
    backbone = keras_hash.backbones.application("ResNet50", (64, 64, 3))
    ```

    Args:
        name: a ``keras.applications`` constructor, e.g. ``"ResNet50"``.
        input_shape: image shape ``(H, W, C)``.
        weights: ``None`` (random initialization), ``"imagenet"`` or the path
            of a weights file for the network without its top.
        mean: per-channel mean of the raw pixels, with ``std``; default:
            the family's own preprocessing.
        std: per-channel standard deviation of the raw pixels.
    """
    constructor = getattr(keras.applications, name, None)
    if constructor is None or not callable(constructor):
        raise ValueError(
            f"Unknown backbone {name!r}: not a keras.applications constructor "
            f"(e.g. 'ResNet50', 'MobileNetV2') nor a registered backbone {names()}"
        )
    mode = PREPROCESSING.get(constructor.__module__.rsplit(".", 1)[-1])
    if (mean is None) != (std is None):
        raise ValueError("pass both mean and std, or neither")
    if mean is not None and mode == "inside":
        raise ValueError(
            f"{name} rescales raw 0-255 pixels inside the network: pass no mean/std"
        )
    if mean is None and mode is None:
        raise ValueError(
            f"how {name} expects its pixels is not known here: pass the mean "
            "and std of the raw pixels its weights were trained on"
        )
    net = constructor(
        include_top=False, weights=weights, input_shape=input_shape, pooling="avg"
    )
    inputs = keras.Input(input_shape, name="images")
    if mean is not None:
        layers = [normalization(mean, std)]
    else:
        layers = preprocessing(mode, input_shape[-1])
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, net(x), name=f"{name.lower()}_backbone")


@keras.saving.register_keras_serializable(package="keras_hash")
class ScaledBias(keras.layers.Layer):
    """Adds a learned per-channel bias ``scale * b``.

    The variable ``b`` is stored divided by ``scale``, so a gradient step
    moves the bias ``scale**2`` times as far as a plain bias would: a
    per-layer learning-rate multiplier that needs no special optimizer (the
    64x BatchNorm-bias learning rate of fast CIFAR-10 training is
    ``scale=8``).

    ```python
    x = keras.layers.BatchNormalization(center=False, scale=False)(x)
    x = keras_hash.backbones.ScaledBias(scale=8.0)(x)
    ```
    """

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def build(self, input_shape):
        self.bias = self.add_weight(
            shape=(input_shape[-1],), initializer="zeros", name="bias"
        )

    def call(self, inputs):
        return inputs + keras.ops.cast(self.scale * self.bias, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def patch_whitening_kernel(images, mean=CIFAR10_MEAN, std=CIFAR10_STD, eps=5e-4):
    """A ``[2, 2, C, 8C]`` kernel that whitens the 2x2 patches of ``images``.

    The normalized images' 2x2 patches (``4C`` values each) have covariance
    ``V diag(lambda) V^T``; the kernel holds the eigenvectors scaled by
    ``1 / sqrt(lambda + eps)`` and their negatives, so a valid 2x2
    convolution with it outputs decorrelated, unit-variance channels (and,
    after a ReLU-like activation, both signs of each).

    ```python
    kernel = keras_hash.backbones.patch_whitening_kernel(train_images[:5000])
    kernel.shape  # (2, 2, 3, 24)
    ```

    Args:
        images: raw images ``[N, H, W, C]`` (0-255), e.g. 5,000 training images.
        mean: per-channel mean of the raw pixels.
        std: per-channel standard deviation of the raw pixels.
        eps: added to the eigenvalues before the inverse square root.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] < 2 or images.shape[2] < 2:
        raise ValueError(
            f"images must be [N, H, W, C] with H, W >= 2, got shape {images.shape}"
        )
    channels = images.shape[-1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean and std need one value per channel ({channels}), got "
            f"{len(mean)} and {len(std)}"
        )
    x = (images.astype(np.float64) - np.asarray(mean)) / np.asarray(std)
    if not np.all(np.isfinite(x)):
        raise ValueError("images contain NaN or infinite values")
    patches = np.stack(
        [
            x[:, i : x.shape[1] - 1 + i, j : x.shape[2] - 1 + j]
            for i in (0, 1)
            for j in (0, 1)
        ],
        axis=-2,
    ).reshape(-1, 4 * channels)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    scaled = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + eps)
    kernel = scaled.T.reshape(4 * channels, 2, 2, channels).transpose(1, 2, 3, 0)
    return np.concatenate([kernel, -kernel], axis=-1).astype(np.float32)


def _identity_start(conv):
    """Sets the first ``min(C_in, C_out)`` filters of a 3x3 convolution to
    the identity."""
    kernel = conv.get_weights()[0]
    size = min(kernel.shape[2], kernel.shape[3])
    kernel[:, :, :, :size] = 0.0
    kernel[1, 1, np.arange(size), np.arange(size)] = 1.0
    conv.set_weights([kernel])


def torch_default_initializer():
    """PyTorch's default kernel initialization: uniform(+-1 / sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")


def _conv_group(x, filters, name):
    for index in (1, 2):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=torch_default_initializer(),
            name=f"{name}_conv{index}",
        )(x)
        if index == 1:
            x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
        x = keras.layers.BatchNormalization(
            momentum=0.6,
            epsilon=1e-12,
            center=False,
            scale=False,
            name=f"{name}_bn{index}",
        )(x)
        x = ScaledBias(8.0, name=f"{name}_bias{index}")(x)
        x = keras.layers.Activation("gelu", name=f"{name}_gelu{index}")(x)
    return x


# Smallest image side whitened_cnn accepts (one owner for the check).
WHITENED_CNN_MIN_SIDE = 24


def whitened_cnn(
    whitening_images,
    widths: tuple = (64, 256, 256),
    input_shape: tuple = (32, 32, 3),
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    name: str = "whitened_cnn",
) -> keras.Model:
    """A fast-converging CNN for 32x32 images with a frozen whitening layer.

    The layout of Keller Jordan's airbench (94% CIFAR-10 accuracy in under
    10 epochs): a frozen 2x2 convolution that whitens image patches
    (:func:`patch_whitening_kernel` of ``whitening_images``) with a learned
    bias and a GELU, then three groups of conv-pool-BN-GELU-conv-BN-GELU with
    ``widths`` filters, and global max-pooling to ``widths[-1]``
    features. BatchNorm has no scale and a bias learning 64x faster
    (:class:`ScaledBias`); each 3x3 convolution starts as the identity on
    its first ``C_in`` filters (all of them when it narrows). About 0.12
    GFLOP (multiply-adds) per image.

    ```python
    backbone = keras_hash.backbones.whitened_cnn(train_images[:5000])
    backbone.output_shape  # (None, 256)
    ```

    Args:
        whitening_images: raw training images ``[N, H, W, C]`` for the
            whitening layer (5,000 are plenty).
        widths: filters of the three groups.
        input_shape: image shape ``(H, W, C)``; ``H`` and ``W`` at least 24,
            or ``None`` for any size.
        mean: per-channel mean of the raw pixels.
        std: per-channel standard deviation of the raw pixels.
        name: model name.

    Returns:
        A functional ``keras.Model`` from images to ``[N, widths[-1]]``.
    """
    if len(widths) != 3 or min(int(w) for w in widths) < 1:
        raise ValueError(f"widths must be three positive ints, got {widths}")
    least = WHITENED_CNN_MIN_SIDE
    if any(side is not None and side < least for side in input_shape[:2]):
        raise ValueError(
            f"whitened_cnn needs images of at least {least}x{least}, got {input_shape}"
        )
    kernel = patch_whitening_kernel(whitening_images, mean, std)
    if kernel.shape[2] != input_shape[-1]:
        raise ValueError(
            f"whitening_images have {kernel.shape[2]} channels, input_shape "
            f"{input_shape} has {input_shape[-1]}"
        )
    inputs = keras.Input(input_shape, name="images")
    x = normalization(mean, std)(inputs)
    whiten = keras.layers.Conv2D(
        kernel.shape[-1], 2, use_bias=False, trainable=False, name="whiten"
    )
    x = ScaledBias(1.0, name="whiten_bias")(whiten(x))
    x = keras.layers.Activation("gelu", name="whiten_gelu")(x)
    for index, filters in enumerate(widths, start=1):
        x = _conv_group(x, int(filters), f"group{index}")
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    model = keras.Model(inputs, x, name=name)
    whiten.set_weights([kernel])
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer is not whiten:
            _identity_start(layer)
    return model


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

    Registered here: ``"cifar_resnet"`` and ``"whitened_cnn"``. Any other
    name is looked up in ``keras.applications`` (:func:`application`).

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
register("whitened_cnn", whitened_cnn)
