"""Encoders for the search service: a SavedModel in process or TF Serving over REST.

Both take what :func:`keras_hash.export.export_saved_model` writes: the
signature ``serving_default`` maps ``images`` (raw pixels ``[N, H, W, C]``, the
backbone's dtype) to ``codes`` (uint8 ``[N, bits // 8]``). Uploaded bytes
become such an image by :func:`decode_upload`, with the decoding and resizing
rule of training (:mod:`keras_hash.datasets`), after checks that refuse what
is not an image, and decompression bombs, before any pixel is decoded.

:class:`Batcher` groups concurrent requests into one encoder call: a request
waits only while a batch is already running, so a lone request goes straight
through and a crowd shares calls (``benchmarks/bench_serve.py`` measures it).

```python
encoder = SavedModelEncoder("runs/cifar/serving/hashnet")   # latest version
image = decode_upload(open("cat.jpg", "rb").read(), encoder.image_shape)
codes = encoder.encode(image[None])                          # uint8 [1, 8]
```
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from keras_hash.codes import check_packed

SIGNATURE = "serving_default"
#: Largest upload the decoder accepts by default (width x height).
MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """An upload that is no usable image; ``status`` is the HTTP code to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, image_shape, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decodes uploaded image bytes to uint8 ``image_shape`` as training does.

    The header is read first (Pillow, no pixels decoded): bytes that are no
    image of :data:`keras_hash.datasets.IMAGE_FORMATS`, or more than
    ``max_pixels`` pixels (a decompression bomb: a small file that expands
    to gigabytes), raise :class:`ImageError` before decoding. Then the one
    decoder of the library, :func:`keras_hash.datasets.decode_image`
    (orientation, alpha, grey, animation rules), and its one resize rule,
    :func:`keras_hash.datasets.resize_image`, make the model's input.

    Args:
        data: the file's bytes.
        image_shape: ``(height, width, channels)`` of the model, channels 1 or 3.
        max_pixels: the largest ``width * height`` accepted.

    Raises:
        ImageError: status 400 for bytes that are not a whole image of those
            formats, 413 for too many pixels.
    """
    from PIL import Image

    from keras_hash import datasets

    if not data:
        raise ImageError("the upload is empty: send the image file's bytes")
    try:
        with Image.open(io.BytesIO(data), formats=datasets.IMAGE_FORMATS) as header:
            width, height = header.size
    except Image.DecompressionBombError as error:
        raise ImageError(f"the image is a decompression bomb: {error}", 413) from error
    except Exception as error:  # noqa: BLE001 - Pillow raises many kinds
        why = "" if type(error).__name__ == "UnidentifiedImageError" else f": {error}"
        raise ImageError(
            f"the upload ({len(data)} bytes) is not a "
            f"{', '.join(datasets.IMAGE_FORMATS)} image{why}"
        ) from error
    if width * height > max_pixels:
        raise ImageError(
            f"the image has {width} x {height} = {width * height} pixels, more "
            f"than the limit of {max_pixels} (a decompression bomb?)",
            413,
        )
    height_out, width_out, channels = (int(side) for side in image_shape)
    try:
        image = datasets.decode_image(data, channels, name="upload")
    except ValueError as error:
        raise ImageError(str(error)) from error
    return np.asarray(datasets.resize_image(image, (height_out, width_out)))


class SavedModelEncoder:
    """Runs a keras_hash SavedModel in this process.

    Args:
        path: a version folder (holding ``saved_model.pb``) or a model folder
            of numeric versions (TF Serving's layout; the largest is used).
    """

    def __init__(self, path: str | os.PathLike):
        import tensorflow as tf

        from keras_hash.beam import resolve_saved_model

        self.path = resolve_saved_model(path)
        try:
            loaded = tf.saved_model.load(self.path)
        except Exception as error:  # noqa: BLE001 - any unreadable model
            raise ValueError(
                f"cannot load the SavedModel {self.path!r}: {error}"
            ) from error
        if SIGNATURE not in loaded.signatures:
            raise ValueError(
                f"{self.path!r} has no {SIGNATURE!r} signature: export it with "
                "keras_hash.export.export_saved_model"
            )
        self._loaded = loaded  # keeps the signature's variables alive
        self._function = loaded.signatures[SIGNATURE]
        inputs = self._function.structured_input_signature[1]
        outputs = self._function.structured_outputs
        if set(inputs) != {"images"} or set(outputs) != {"codes"}:
            raise ValueError(
                f"{self.path!r} is not a keras_hash encoder: {SIGNATURE!r} maps "
                f"{sorted(inputs)} to {sorted(outputs)}, expected images -> codes"
            )
        spec = inputs["images"]
        self.image_shape = _image_shape(spec.shape.as_list(), self.path)
        self.dtype = spec.dtype.name
        self.bits = int(outputs["codes"].shape[-1]) * 8

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Packed codes (uint8 ``[N, bits // 8]``) of uint8 images ``[N, H, W, C]``."""
        import tensorflow as tf

        images = tf.constant(np.asarray(images).astype(self.dtype))
        codes = self._function(images=images)["codes"].numpy()
        return check_packed(codes, bits=self.bits)

    def describe(self) -> dict:
        return {"kind": "saved_model", "path": self.path, **_spec(self)}


class TFServingEncoder:
    """Asks a TF Serving instance that serves a keras_hash SavedModel (REST).

    Args:
        url: the model's REST address, ``http://host:8501/v1/models/<name>``
            (optionally ``/versions/<n>``). Its ``/metadata`` gives the image
            shape, dtype and bits; ``:predict`` encodes.
        timeout: seconds per request.
    """

    def __init__(self, url: str, timeout: float = 30.0):
        import httpx

        if not url.startswith(("http://", "https://")) or "/v1/models/" not in url:
            raise ValueError(
                f"a TF Serving model URL looks like http://host:8501/v1/models/"
                f"<name>, got {url!r}"
            )
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=timeout)
        try:
            reply = self._client.get(self.url + "/metadata")
            reply.raise_for_status()
            signature = reply.json()["metadata"]["signature_def"]["signature_def"][
                SIGNATURE
            ]
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as error:
            raise ConnectionError(
                f"no keras_hash model metadata at {self.url}/metadata: {error}"
            ) from error
        try:
            images = signature["inputs"]["images"]
            codes = signature["outputs"]["codes"]
            shape = [int(d["size"]) for d in images["tensor_shape"]["dim"]]
            code_shape = [int(d["size"]) for d in codes["tensor_shape"]["dim"]]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{self.url}: {SIGNATURE!r} is not images -> codes: {error}"
            ) from error
        if codes.get("dtype") != "DT_UINT8" or len(code_shape) != 2:
            raise ValueError(f"{self.url}: codes must be DT_UINT8 [N, bits // 8]")
        self.image_shape = _image_shape(shape, self.url)
        self.dtype = {"DT_FLOAT": "float32", "DT_UINT8": "uint8"}.get(
            images.get("dtype"), "float32"
        )
        self.bits = code_shape[1] * 8

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Packed codes of uint8 images ``[N, H, W, C]``, from the server."""
        import httpx

        body = {
            "signature_name": SIGNATURE,
            "instances": np.asarray(images).astype(self.dtype).tolist(),
        }
        try:
            reply = self._client.post(self.url + ":predict", content=json.dumps(body))
            reply.raise_for_status()
            rows = np.asarray(reply.json()["predictions"])
        except (httpx.HTTPError, KeyError, ValueError) as error:
            raise ConnectionError(
                f"TF Serving at {self.url} failed: {error}"
            ) from error
        if rows.ndim != 2 or rows.size and (rows.min() < 0 or rows.max() > 255):
            raise ConnectionError(f"TF Serving at {self.url} sent no uint8 codes")
        return check_packed(rows.astype(np.uint8), bits=self.bits)

    def describe(self) -> dict:
        return {"kind": "tf_serving", "url": self.url, **_spec(self)}


def _spec(encoder) -> dict:
    return {
        "image_shape": list(encoder.image_shape),
        "dtype": encoder.dtype,
        "bits": encoder.bits,
    }


def _image_shape(shape, where) -> tuple[int, int, int]:
    if (
        len(shape) != 4
        or any(not d or d < 1 for d in shape[1:])
        or shape[3]
        not in (
            1,
            3,
        )
    ):
        raise ValueError(
            f"{where}: images must be [N, H, W, 1 or 3] with a fixed size, got {shape}"
        )
    return tuple(int(d) for d in shape[1:])


class Batcher:
    """Encodes one image per call, grouping concurrent calls into batches.

    A call queues its image; one worker takes everything queued (up to
    ``max_batch``), encodes it in one encoder call on its own thread, and
    answers each caller. No timer: a lone call waits for nothing.

    Args:
        encode: ``uint8 [N, H, W, C] -> uint8 [N, bytes]``.
        max_batch: largest batch; 1 turns batching off.
    """

    def __init__(self, encode, max_batch: int = 32):
        if (
            isinstance(max_batch, bool)
            or not isinstance(max_batch, int)
            or max_batch < 1
        ):
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        self._encode = encode
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="encoder")
        self._loop = self._queue = self._worker = None
        self.batches = 0  # encoder calls made, for tests and benchmarks

    async def encode(self, image: np.ndarray) -> np.ndarray:
        """The packed code (uint8 ``[bytes]``) of one image ``[H, W, C]``."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests make several)
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._run())
        answer = loop.create_future()
        await self._queue.put((image, answer))
        return await answer

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            images = np.stack([image for image, _ in batch])
            try:
                codes = await loop.run_in_executor(self._executor, self._encode, images)
                self.batches += 1
            except Exception as error:  # noqa: BLE001 - handed to every caller
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(error)
                continue
            for (_, answer), code in zip(batch, codes, strict=True):
                if not answer.done():  # the caller may have gone
                    answer.set_result(code)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False)
