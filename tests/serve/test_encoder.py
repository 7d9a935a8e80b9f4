"""Upload decoding and request batching of the search service."""

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from keras_hash.serve.encoder import Batcher, ImageError, decode_upload
from tests.serve.conftest import image_bytes

pytestmark = pytest.mark.numpy_only
NOISE = image_bytes(np.random.default_rng(1).integers(0, 256, (8, 8, 3), np.uint8))


def test_decode_upload_keeps_pixels_and_converts_channels():
    pixels = np.random.default_rng(0).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    data = image_bytes(pixels)
    np.testing.assert_array_equal(decode_upload(data, (8, 6, 3)), pixels)
    grey = np.asarray(Image.fromarray(pixels).convert("L"))[..., None]  # ITU-R 601-2
    np.testing.assert_array_equal(decode_upload(data, (8, 6, 1)), grey)
    assert decode_upload(data, (5, 4, 3)).shape == (5, 4, 3)


def test_decode_upload_takes_the_first_frame_of_a_gif():
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_upload(out.getvalue(), (4, 4, 3))
    assert decoded[0, 0, 0] > 200 and decoded[0, 0, 2] < 50


@pytest.mark.parametrize(
    "data, status, words",
    [
        (b"", 400, "empty"),
        (b"%PDF-1.4 not an image", 400, "is not a JPEG, PNG, GIF, BMP, WEBP image"),
        (image_bytes(np.zeros((8, 8, 3), np.uint8), "TIFF"), 400, "is not a JPEG"),
        (NOISE[: len(NOISE) // 2], 400, "Cannot read image upload"),
        (image_bytes(np.zeros((30, 40, 3), np.uint8)), 413, "30 = 1200 pixels"),
    ],
)
def test_decode_upload_refuses(data, status, words):
    with pytest.raises(ImageError, match=words) as caught:
        decode_upload(data, (8, 8, 3), max_pixels=1000)
    assert caught.value.status == status


def test_batcher_hands_errors_to_every_caller_and_goes_on():
    calls = []

    def encode(images):
        calls.append(len(images))
        if images[0, 0, 0, 0] == 255:
            raise ConnectionError("encoder down")
        return np.packbits(images.reshape(len(images), -1)[:, :8] > 127, axis=1)

    batcher = Batcher(encode, max_batch=4)

    async def run(values):
        images = [np.full((2, 2, 2), v, np.uint8) for v in values]
        return await asyncio.gather(
            *[batcher.encode(image) for image in images], return_exceptions=True
        )

    bad = asyncio.run(run([255, 0, 0]))
    assert all(isinstance(answer, ConnectionError) for answer in bad)
    good = asyncio.run(run([0, 200, 0, 200, 0]))
    assert [answer.tolist() for answer in good] == [[0], [255], [0], [255], [0]]
    assert max(calls) <= 4 and sum(calls) == 8
    batcher.close()
    with pytest.raises(ValueError, match="max_batch must be an int >= 1"):
        Batcher(encode, max_batch=0)
