"""Export a hash model for deployment: SavedModels for TF Serving, TFLite files.

Every artifact takes raw images (the model's preprocessing is inside the
graph) and returns packed binary codes, uint8 ``[N, bits // 8]``, bit for bit
the codes of ``model.encode`` in the bit order of
:func:`keras_hash.pack_codes`, ready for a :class:`keras_hash.HammingIndex`.

- :func:`export_saved_model` writes TF Serving's layout
  ``<base_dir>/<model_name>/<version>/`` with two signatures:
  ``serving_default`` (input ``images``, output ``codes``, uint8) and
  ``code_logits`` (input ``images``, output ``logits``: the float32 ``z``
  whose signs are the bits, for re-ranking).
- :func:`export_tflite` writes a ``.tflite`` file, ``float32``, ``float16``,
  ``dynamic`` (int8 weights, float activations) or ``int8`` (int8 weights and
  activations calibrated on images you supply), with one signature
  ``serving_default`` (``images`` -> ``codes``). Only TFLite builtin ops are
  allowed: conversion fails if the graph would need the Flex (Select TF ops)
  runtime.
- :class:`TFLiteEncoder` runs such a file with the LiteRT interpreter.

Both writers build the graph with ``keras.export.ExportArchive`` and are
atomic: they write a temporary sibling and rename it into place, so an
interrupted export leaves no half-written version directory (TF Serving only
loads directories whose names are numbers; the temporary one is not). Files
and folders get the permissions of the process umask (``0644`` and ``0755``
under the usual ``022``), so a server running as another user can read
them; see :mod:`keras_hash.files`.

Non-finite pixels (NaN, Inf) would silently give meaningless codes, so they
are refused wherever an error can be raised: the SavedModel signatures fail
with ``InvalidArgumentError`` ("images contain NaN or Inf"),
:class:`TFLiteEncoder` and ``representative_images`` raise ``ValueError``
before the interpreter or converter sees them. A ``.tflite`` graph cannot
raise, and its outputs are kept as documented (``codes`` only), so a program
that runs the file with its own interpreter must check its images
(``np.isfinite(images).all()``) itself.

Codes are packed by :func:`keras_hash.codes.pack_codes_tensor`, in int32
arithmetic (``cast(z >= 0) * [128, ..., 1]`` and a sum): full-int8 conversion
quantizes every float tensor, and a float packing sum (0 to 255) quantized to
int8 loses bits; int32 tensors are left alone.

```python
from keras_hash import export

model = export.load_hash_model("hashnet.keras")
export.export_saved_model(model, "/models", model_name="hashnet", version=1)
export.export_tflite(model, "hashnet_int8.tflite", quantization="int8",
                     representative_images=train_images[:500])
codes = export.TFLiteEncoder("hashnet_int8.tflite").encode(images)
```
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf

from keras_hash.codes import check_bits, pack_codes_tensor
from keras_hash.files import write_atomic, write_directory_atomic
from keras_hash.models import HashModel

SERVING_SIGNATURE = "serving_default"
LOGITS_SIGNATURE = "code_logits"
INPUT_NAME = "images"
CODES_OUTPUT = "codes"
LOGITS_OUTPUT = "logits"
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
#: Image dtypes :func:`check_images` accepts; uint8 is cast losslessly.
NON_FINITE_MESSAGE = "images contain NaN or Inf: their codes would be meaningless"
IMAGE_DTYPES = ("float32", "uint8")


def load_hash_model(path: str | os.PathLike) -> HashModel:
    """Loads a saved keras_hash model (``.keras``), with clear errors.

    Args:
        path: a ``.keras`` file written by ``model.save``.

    Returns:
        the :class:`keras_hash.HashModel` (``HashNet``, ``DHN``, ...).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} is corrupt or truncated: a .keras file is a zip archive "
            "and this is none; save the model again (model.save)"
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise ValueError(
            f"could not load a Keras model from {path!r} (corrupt, or saved "
            f"with layers that are not registered): {error}"
        ) from error
    if not isinstance(model, HashModel):
        raise TypeError(
            f"{path!r} holds a {type(model).__name__}, not a keras_hash hash "
            "model (HashNet, DHN or another HashModel)"
        )
    return model


def image_spec(model: HashModel) -> tf.TensorSpec:
    """The exported input: ``images``, ``[None, *image_shape]``, backbone dtype."""
    if not isinstance(model, HashModel):
        raise TypeError(
            f"model must be a keras_hash HashModel, got {type(model).__name__}"
        )
    check_bits(model.bits)
    shape = getattr(model.backbone, "input_shape", None)
    if not isinstance(shape, tuple) or any(d is None for d in shape[1:]):
        raise ValueError(
            "export needs a backbone with a fixed input shape (build it on "
            f"keras.Input((height, width, channels))), got {shape!r}"
        )
    inputs = getattr(model.backbone, "inputs", None) or [None]
    dtype = getattr(inputs[0], "dtype", None) or "float32"
    return tf.TensorSpec((None, *shape[1:]), tf.as_dtype(dtype), name=INPUT_NAME)


def _archive(
    model: HashModel, with_logits: bool, check_finite: bool = True
) -> keras.export.ExportArchive:
    spec = image_spec(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    check_finite = check_finite and spec.dtype.is_floating

    def logits(images):
        # Signature wrappers do not check shapes: a wrong image size could
        # otherwise run (e.g. through Flatten after pooling) and return junk.
        images = tf.ensure_shape(images, spec.shape)
        if check_finite:  # CheckNumerics is no TFLite builtin: SavedModel only
            images = tf.debugging.assert_all_finite(images, NON_FINITE_MESSAGE)
        return model.code_logits(images)

    archive.add_endpoint(
        SERVING_SIGNATURE,
        lambda images: {CODES_OUTPUT: pack_codes_tensor(logits(images))},
        input_signature=[spec],
    )
    if with_logits:
        archive.add_endpoint(
            LOGITS_SIGNATURE,
            lambda images: {LOGITS_OUTPUT: logits(images)},
            input_signature=[spec],
        )
    return archive


def _check_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)):
        raise TypeError(f"version must be an int, got {version!r}")
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    return int(version)


def next_version(model_dir: str | os.PathLike) -> int:
    """The next free TF Serving version number under ``<base_dir>/<model_name>``.

    One more than the largest numeric sub-folder, 1 when there is none.

    ```python
    export_saved_model(model, "/models", "hashnet", next_version("/models/hashnet"))
    ```
    """
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(name) for name in os.listdir(model_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def export_saved_model(
    model: HashModel,
    base_dir: str | os.PathLike,
    model_name: str = "keras_hash",
    version: int = 1,
) -> str:
    """Writes a SavedModel for TF Serving to ``<base_dir>/<model_name>/<version>``.

    Signatures (as ``saved_model_cli show`` prints them):

    - ``serving_default``: input ``images``, the backbone's dtype (float32
      for a plain ``keras.Input``) and shape ``[-1, *image_shape]``, raw
      pixel values (preprocessing is in the graph); output ``codes``,
      uint8 ``[-1, bits // 8]``.
    - ``code_logits``: same input; output ``logits``, float32 ``[-1, bits]``.

    ```python
    path = export_saved_model(model, "/models", model_name="hashnet", version=2)
    # docker run -p 8501:8501 -v /models/hashnet:/models/hashnet \\
    #     -e MODEL_NAME=hashnet tensorflow/serving
    ```

    Args:
        model: a trained :class:`keras_hash.HashModel` with ``bits % 8 == 0``.
        base_dir: the model base path that TF Serving watches.
        model_name: the model's folder under ``base_dir``.
        version: a positive int; an existing version directory is an error
            (versions are immutable: bump the number).

    Returns:
        the version directory written.
    """
    version = _check_version(version)
    if not model_name or os.sep in model_name or model_name in (".", ".."):
        raise ValueError(f"model_name must be a plain folder name, got {model_name!r}")
    model_dir = os.path.join(os.fspath(base_dir), model_name)
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(
            f"version directory {target!r} already exists; export to a new version"
        )
    _check_code_width(model_dir, check_bits(model.bits) // 8)
    archive = _archive(model, with_logits=True)
    write_directory_atomic(
        target, lambda staging: archive.write_out(staging, verbose=False)
    )
    return target


def published_code_bytes(model_dir: str | os.PathLike) -> dict[int, int]:
    """``{version: bytes per code}`` of the SavedModels under ``model_dir``.

    Read from each version's ``serving_default`` signature (the ``codes``
    output's last dimension) without loading the model.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    widths = {}
    model_dir = os.fspath(model_dir)
    names = os.listdir(model_dir) if os.path.isdir(model_dir) else []
    for name in sorted(n for n in names if n.isdigit()):
        path = os.path.join(model_dir, name, "saved_model.pb")
        if not os.path.isfile(path):
            continue
        saved = saved_model_pb2.SavedModel()
        with open(path, "rb") as file:
            saved.ParseFromString(file.read())
        for graph in saved.meta_graphs:
            signature = graph.signature_def.get(SERVING_SIGNATURE)
            if signature is not None and CODES_OUTPUT in signature.outputs:
                dims = signature.outputs[CODES_OUTPUT].tensor_shape.dim
                widths[int(name)] = int(dims[-1].size)
    return widths


def _check_code_width(model_dir: str, code_bytes: int) -> None:
    """One served model name, one code width: clients and indexes rely on it."""
    widths = published_code_bytes(model_dir)
    other = sorted((v, w) for v, w in widths.items() if w != code_bytes)
    if other:
        found = ", ".join(f"version {v}: {w * 8} bits" for v, w in other)
        raise ValueError(
            f"{model_dir!r} already serves codes of another width ({found}); this "
            f"model has {code_bytes * 8} bits. TF Serving would answer with both "
            "under one name and break every index built for the other width: "
            "export under another model_name (e.g. hashnet_{bits}) or base_dir"
        )


def _converter(saved_model_dir: str, quantization: str, representative_images):
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[SERVING_SIGNATURE]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: (
            [image[None]] for image in representative_images
        )
    return converter


def _check_quantization(quantization: str, representative_images, spec):
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}"
        )
    if quantization != "int8":
        if representative_images is not None:
            raise ValueError(
                "representative_images is only used with quantization='int8', "
                f"got quantization={quantization!r}"
            )
        return None
    if representative_images is None:
        raise ValueError(
            "quantization='int8' needs representative_images: a few hundred "
            "images like those the model will encode, to calibrate activations"
        )
    # check_images refuses NaN and Inf: the int8 converter would crash the
    # process on them ("scale out of expressed type range").
    images = check_images(representative_images, spec.shape[1:], spec.dtype.name)
    if len(images) == 0:
        raise ValueError("representative_images is empty")
    return images


def builtin_op_names(tflite_model: bytes) -> list[str]:
    """The operator codes of a TFLite flatbuffer; fails on Flex or custom ops.

    Args:
        tflite_model: the ``.tflite`` file's bytes.

    Returns:
        sorted builtin op names, e.g. ``["CONV_2D", "FULLY_CONNECTED", ...]``.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    parsed = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_model))
    names = {
        flatbuffer_utils.opcode_to_name(parsed, i)
        for i in range(len(parsed.operatorCodes))
    }
    custom = sorted(
        (code.customCode or b"").decode()
        for code in parsed.operatorCodes
        if code.customCode
    )
    if custom:
        raise ValueError(
            f"TFLite model uses non-builtin ops {custom} (Flex or custom); "
            "keras_hash exports must run on the builtin runtime"
        )
    return sorted(names)


def export_tflite(
    model: HashModel,
    path: str | os.PathLike,
    quantization: str = "float32",
    representative_images=None,
    overwrite: bool = False,
) -> str:
    """Writes a TFLite file whose ``serving_default`` signature returns packed codes.

    Input ``images``: float32 (the backbone's dtype) ``[N, *image_shape]``,
    raw pixels; output ``codes``: uint8 ``[N, bits // 8]``. Only TFLite
    builtin ops are allowed; an op that would need the Flex runtime makes the
    conversion fail with a ``ValueError``.

    ```python
    export_tflite(model, "codes.tflite")                      # exact codes
    export_tflite(model, "codes_int8.tflite", "int8", representative_images=x)
    ```

    Args:
        model: a trained :class:`keras_hash.HashModel` with ``bits % 8 == 0``.
        path: the ``.tflite`` file to write.
        quantization: ``"float32"`` (codes equal ``model.encode``),
            ``"float16"`` (float16 weights), ``"dynamic"`` (int8 weights,
            float activations) or ``"int8"`` (int8 weights and activations;
            input and output interfaces unchanged).
        representative_images: for ``"int8"`` only, an array
            ``[N, *image_shape]`` of images like those to be encoded (a few
            hundred), used to calibrate activation ranges.
        overwrite: replace an existing file instead of raising.

    Returns:
        the path written.
    """
    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(f"path must end with '.tflite', got {path!r}")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} already exists; pass overwrite=True")
    spec = image_spec(model)
    images = _check_quantization(quantization, representative_images, spec)
    with tempfile.TemporaryDirectory() as saved_model_dir:
        _archive(model, with_logits=False, check_finite=False).write_out(
            saved_model_dir, verbose=False
        )
        converter = _converter(saved_model_dir, quantization, images)
        try:
            tflite_model = converter.convert()
        except Exception as error:
            raise ValueError(
                f"TFLite conversion ({quantization}) failed; keras_hash allows "
                f"TFLite builtin ops only (no Flex): {error}"
            ) from error
    builtin_op_names(tflite_model)
    write_atomic(path, lambda staging: _write_bytes(staging, tflite_model))
    return path


def _write_bytes(path: str, content: bytes) -> None:
    with open(path, "wb") as file:
        file.write(content)


def check_images(images, image_shape: Iterable[int], dtype: str = "float32"):
    """Validates a batch of raw images against an exported model's input.

    Args:
        images: array-like ``[N, *image_shape]``, float32 or uint8 (uint8 is
            cast to float32 losslessly).
        image_shape: the model's per-image shape, e.g. ``(224, 224, 3)``.
        dtype: the model's input dtype.

    Returns:
        the images as a C-contiguous numpy array of ``dtype``.

    Raises:
        ValueError: wrong shape, or a NaN or Inf pixel (the index of the
            first such image is in the message).
    """
    images = np.asarray(images)
    image_shape = tuple(int(d) for d in image_shape)
    if images.dtype.name not in (*IMAGE_DTYPES, dtype):
        raise TypeError(
            f"images must be {' or '.join(sorted({*IMAGE_DTYPES, dtype}))}, got "
            f"dtype {images.dtype}; cast with images.astype('{dtype}')"
        )
    if images.ndim != len(image_shape) + 1 or images.shape[1:] != image_shape:
        raise ValueError(
            f"images must have shape [N, {', '.join(map(str, image_shape))}], "
            f"got shape {images.shape}" + _shape_hint(images.shape, image_shape)
        )
    images = np.ascontiguousarray(images, dtype=dtype)
    if images.dtype.kind == "f" and images.size:
        finite = np.isfinite(images).all(axis=tuple(range(1, images.ndim)))
        if not finite.all():
            raise ValueError(
                f"{NON_FINITE_MESSAGE} (image {int(np.argmin(finite))} of "
                f"{len(images)}, {int((~finite).sum())} in all)"
            )
    return images


def _shape_hint(got: tuple, want: tuple) -> str:
    if len(got) == len(want) and got[1:] != want:
        return " (one image, not a batch? add a batch axis)"
    if len(got) == len(want) + 1 and got[-1] != want[-1]:
        return f" (the model takes {want[-1]} channel(s), the images have {got[-1]})"
    if len(got) == len(want) + 1:
        return f" (resize the images to {want[:-1]})"
    return ""


class TFLiteEncoder:
    """Encodes images to packed codes with an exported ``.tflite`` file (LiteRT).

    ```python
    encoder = TFLiteEncoder("hashnet_int8.tflite")
    codes = encoder.encode(images)  # uint8 [N, bits // 8]
    ```

    Args:
        path: a file written by :func:`export_tflite`.
        num_threads: interpreter threads (``None``: LiteRT's default).
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no TFLite file at {path!r}")
        self.path = path
        self._interpreter = Interpreter(model_path=path, num_threads=num_threads)
        signatures = self._interpreter.get_signature_list()
        if SERVING_SIGNATURE not in signatures or signatures[SERVING_SIGNATURE] != {
            "inputs": [INPUT_NAME],
            "outputs": [CODES_OUTPUT],
        }:
            raise ValueError(
                f"{path!r} is not a keras_hash TFLite export (signatures: {signatures})"
            )
        self._runner = self._interpreter.get_signature_runner(SERVING_SIGNATURE)
        detail = self._runner.get_input_details()[INPUT_NAME]
        self.image_shape = tuple(int(d) for d in detail["shape"][1:])
        self.dtype = np.dtype(detail["dtype"]).name
        output = self._runner.get_output_details()[CODES_OUTPUT]
        self.bits = int(output["shape"][-1]) * 8

    def encode(self, images, batch_size: int = 256) -> np.ndarray:
        """Packed codes, uint8 ``[N, bits // 8]``, for raw images ``[N, *shape]``."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        images = check_images(images, self.image_shape, self.dtype)
        chunks = [
            self._runner(**{INPUT_NAME: images[i : i + batch_size]})[CODES_OUTPUT]
            for i in range(0, len(images), batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.bits // 8), np.uint8)
        return np.concatenate(chunks, axis=0)


def read_images(directory: str | os.PathLike, image_shape: Iterable[int]):
    """Reads a folder's images, resized to a model's input shape, by the one rule.

    The images a model is calibrated or tested on get the pixels it was
    trained on: files are listed by :func:`keras_hash.datasets.list_image_paths`
    (a flat folder of images or a class-folder tree, sorted; hidden and
    system files skipped with a warning; any other file is a ``ValueError``
    naming it), decoded by :func:`keras_hash.datasets.read_image` (16-bit,
    CMYK, palette, alpha, EXIF orientation) and resized by
    :func:`keras_hash.datasets.resize_image`.

    ```python
    images, names = read_images("calibration/", (224, 224, 3))
    ```

    Args:
        directory: a folder of image files, or of class folders of them.
        image_shape: ``(height, width, channels)`` with 1 or 3 channels.

    Returns:
        ``(images, names)``: float32 ``[N, height, width, channels]`` raw
        pixel values 0..255, and the paths relative to ``directory``.
    """
    from keras_hash import datasets

    height, width, channels = (int(d) for d in image_shape)
    if channels not in (1, 3):
        raise ValueError(f"read_images handles 1 or 3 channels, got {channels}")
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no image folder at {directory!r}")
    paths = datasets.list_image_paths(directory)
    images = [
        datasets.resize_image(datasets.read_image(path, channels), (height, width))
        for path in paths
    ]
    names = [os.path.relpath(path, directory) for path in paths]
    return np.stack([np.asarray(image, np.float32) for image in images]), names
