"""API tests of the search service through FastAPI's test client.

Every answer is checked against tests/reference.py's brute-force search over
codes the Keras model computed itself; every bad request gets a 4xx that names
the problem, and the service keeps answering after it.
"""

import asyncio
import base64
import http.server
import io
import json
import struct
import threading
import zlib

import httpx
import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient
from PIL import Image

import keras_hash
from keras_hash.serve import create_app
from keras_hash.serve.encoder import TFServingEncoder
from keras_hash.serve.sources import ImageCatalog
from tests import reference
from tests.serve.conftest import BITS, expected_code, image_bytes


@pytest.fixture(scope="module")
def client(world):
    index = keras_hash.index.load(world["index_path"])
    with TestClient(create_app(world["encoder"], index, world["catalog"])) as client:
        yield client


def want_knn(world, code, k):
    distances, ids = reference.knn(world["codes"], world["ids"], code, k)
    return [(str(i), int(d)) for d, i in zip(distances[0], ids[0], strict=True)]


def got(answer):
    return [(hit["id"], hit["distance"]) for hit in answer["results"]]


def check_bits(answer, code):
    assert answer["query"]["code"] == code.tobytes().hex()
    assert answer["query"]["bits"] == "".join(map(str, np.unpackbits(code[0])))


def test_info_and_health(client, world):
    assert client.get("/api/health").json() == {"status": "ok"}
    info = client.get("/api/info").json()
    assert info["bits"] == BITS
    assert info["index"] == {"kind": "HammingIndex", "size": 40, "bits": BITS}
    assert info["model"]["image_shape"] == [16, 16, 3]
    assert info["model"]["kind"] == "saved_model"
    assert info["images"]["count"] == 40


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_search_by_image_knn(client, world, which, k):
    data = world["queries"][which]
    code = expected_code(world["model"], data)
    answer = client.post(f"/api/search/image?k={k}", content=data).json()
    assert answer["mode"] == "knn" and answer["k"] == k
    assert got(answer) == want_knn(world, code, k)
    check_bits(answer, code)
    first = answer["results"][0]
    assert first["image"] == f"/api/images/{first['id']}"
    assert first["thumbnail"] == f"/api/images/{first['id']}/thumbnail"


@pytest.mark.parametrize("radius", [0, 12, 16, 32])
def test_search_by_image_radius(client, world, radius):
    data = world["queries"][0]
    code = expected_code(world["model"], data)
    answer = client.post(f"/api/search/image?radius={radius}&limit=5", content=data)
    answer = answer.json()
    lims, distances, ids = reference.range_search(
        world["codes"], world["ids"], code, radius
    )
    want = [(str(i), int(d)) for d, i in zip(distances, ids, strict=True)]
    assert answer["mode"] == "radius" and answer["count"] == len(want)
    assert got(answer) == want[:5]


def test_search_by_id(client, world):
    for position in (0, 17, 39):
        image_id, code = world["ids"][position], world["codes"][position : position + 1]
        answer = client.get(f"/api/search/id/{image_id}?k=6").json()
        assert answer["query"]["id"] == str(image_id)
        assert got(answer) == want_knn(world, code, 6)
        assert answer["results"][0] == {
            "id": str(image_id),
            "distance": 0,
            "image": f"/api/images/{image_id}",
            "thumbnail": f"/api/images/{image_id}/thumbnail",
        }
        check_bits(answer, code)


def test_search_by_code_hex_and_base64(client, world):
    code = np.random.default_rng(5).integers(0, 256, (1, BITS // 8), dtype=np.uint8)
    want = want_knn(world, code, 9)
    hexed = client.get(f"/api/search/code?code={code.tobytes().hex().upper()}&k=9")
    assert got(hexed.json()) == want
    for text in (
        base64.b64encode(code.tobytes()).decode(),
        base64.urlsafe_b64encode(code.tobytes()).decode().rstrip("="),
    ):
        answer = client.get(
            "/api/search/code", params={"code": text, "format": "base64", "k": 9}
        )
        assert got(answer.json()) == want


def test_images_and_thumbnails(client, world):
    image_id = world["ids"][3]
    path = world["catalog"].path(image_id)
    original = client.get(f"/api/images/{image_id}")
    assert original.status_code == 200
    assert original.content == open(path, "rb").read()
    small = client.get(f"/api/images/{image_id}/thumbnail")
    assert small.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(small.content)))
    np.testing.assert_array_equal(pixels, np.asarray(Image.open(path)))  # 16 px: kept
    big = world["root"] / "big.png"
    big.write_bytes(image_bytes(np.zeros((300, 200, 3), np.uint8)))
    index = keras_hash.HammingIndex(BITS)
    index.add(world["codes"][:1], [-5])
    app = create_app(world["encoder"], index, ImageCatalog([-5], [big], "big"))
    with TestClient(app) as other:
        thumb = other.get("/api/images/-5/thumbnail?size=64")
    assert Image.open(io.BytesIO(thumb.content)).size == (43, 64)


def test_page_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and "static/app.js" in page.text
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # nothing remote
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {
        "/api/health",
        "/api/info",
        "/api/search/image",
        "/api/search/id/{image_id}",
        "/api/search/code",
        "/api/images/{image_id}",
        "/api/images/{image_id}/thumbnail",
    }


def png_header(width, height):
    """A PNG that declares width x height pixels (a decompression bomb's header)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)


@pytest.mark.parametrize(
    "method, url, body, status, words",
    [
        ("post", "/api/search/image", b"hello, not an image", 400, "not a JPEG"),
        ("post", "/api/search/image", b"", 400, "empty"),
        ("post", "/api/search/image", b"GIF89a broken", 400, "image"),
        ("post", "/api/search/image", png_header(100_000, 100_000), 413, "bomb"),
        ("post", "/api/search/image", png_header(8000, 6000), 413, "limit of 40000000"),
        ("get", "/api/search/code?code=zz", None, 400, "not valid hex"),
        ("get", "/api/search/code?code=00ff", None, 400, "16 bits; the index holds 32"),
        ("get", "/api/search/code?code=%21%21&format=base64", None, 400, "base64"),
        ("get", "/api/search/code?code=00ff00ff&format=b32", None, 422, "format"),
        ("get", "/api/search/id/12345", None, 404, "id 12345 is not in the index"),
        ("get", "/api/search/id/abc", None, 422, "image_id"),
        ("get", f"/api/search/id/{2**64}", None, 422, "image_id"),
        ("get", "/api/search/code?code=00ff00ff&k=0", None, 422, "k"),
        ("get", "/api/search/code?code=00ff00ff&k=41", None, 400, "k=41 is more than"),
        ("get", "/api/search/code?code=00ff00ff&radius=-1", None, 422, "radius"),
        ("get", "/api/images/12345", None, 404, "id 12345 has no image"),
        ("get", "/api/images/12345/thumbnail", None, 404, "id 12345 has no image"),
        ("get", "/api/images/1/thumbnail?size=5000", None, 422, "size"),
    ],
)
def test_bad_requests_name_the_problem(client, world, method, url, body, status, words):
    reply = getattr(client, method)(
        url, **({"content": body} if body is not None else {})
    )
    assert reply.status_code == status, reply.text
    assert words in json.dumps(reply.json()["detail"])
    still = client.post("/api/search/image?k=3", content=world["queries"][1])
    assert still.status_code == 200  # keeps serving


def test_upload_size_limit(world):
    index = keras_hash.index.load(world["index_path"])
    app = create_app(world["encoder"], index, None, max_upload_bytes=5000)
    with TestClient(app) as client:
        big = image_bytes(
            np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        )
        assert len(big) > 5000 > max(map(len, world["queries"]))
        declared = client.post("/api/search/image", content=big)
        assert declared.status_code == 413 and "limit of 5000 bytes" in declared.text
        streamed = client.post(
            "/api/search/image", content=iter([big[:3000], big[3000:]])
        )
        assert streamed.status_code == 413 and "limit of 5000 bytes" in streamed.text
        small = client.post("/api/search/image?k=2", content=world["queries"][2])
        assert small.status_code == 200
        assert small.json()["results"][0]["image"] is None  # no images given
        assert "without images" in client.get("/api/images/1").text


def test_bits_mismatch_is_refused(world):
    with pytest.raises(ValueError, match="32-bit codes but the index holds 64"):
        create_app(world["encoder"], keras_hash.HammingIndex(64))
    with pytest.raises(TypeError, match="got dict"):
        create_app(world["encoder"], {"bits": 32})


async def concurrent_uploads(app, queries, count):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        replies = await asyncio.gather(
            *[
                client.post("/api/search/image?k=4", content=queries[i % len(queries)])
                for i in range(count)
            ]
        )
    return [reply.json() for reply in replies]


@pytest.mark.parametrize("max_batch", [1, 32])
def test_concurrent_requests_are_batched(world, max_batch):
    index = keras_hash.index.load(world["index_path"])
    app = create_app(world["encoder"], index, world["catalog"], max_batch=max_batch)
    answers = asyncio.run(concurrent_uploads(app, world["queries"], 24))
    for i, answer in enumerate(answers):
        code = expected_code(world["model"], world["queries"][i % 3])
        assert got(answer) == want_knn(world, code, 4)
    batches = app.state.service.batcher.batches
    if max_batch == 1:
        assert batches == 24
    else:
        assert batches < 24  # requests shared encoder calls


def test_ivf_index(world, tmp_path):
    ivf = keras_hash.index.IVFHammingIndex(BITS, nlist=4)
    ivf.train(world["codes"])
    ivf.add(world["codes"], world["ids"])
    ivf.nprobe = 4  # every list: exact
    with TestClient(create_app(world["encoder"], ivf, world["catalog"])) as client:
        assert client.get("/api/info").json()["index"]["kind"] == "IVFHammingIndex"
        data = world["queries"][0]
        answer = client.post("/api/search/image?k=8", content=data).json()
        assert got(answer) == want_knn(world, expected_code(world["model"], data), 8)
        for row in (0, len(world["ids"]) - 1):  # search by id: index.get
            by_id = client.get(f"/api/search/id/{world['ids'][row]}?k=3")
            assert by_id.status_code == 200, by_id.text
            code = world["codes"][row : row + 1]
            assert got(by_id.json()) == want_knn(world, code, 3)
            check_bits(by_id.json(), code)
        unknown = int(world["ids"].max()) + 1
        missing = client.get(f"/api/search/id/{unknown}?k=3")
        assert missing.status_code == 404 and str(unknown) in missing.text
    # after save/load the same answers (the IVF file keeps what get reads)
    ivf.save(tmp_path / "index.khivf")
    loaded = keras_hash.index.load(tmp_path / "index.khivf")
    with TestClient(create_app(world["encoder"], loaded, world["catalog"])) as client:
        by_id = client.get(f"/api/search/id/{world['ids'][1]}?k=3")
        assert got(by_id.json()) == want_knn(world, world["codes"][1:2], 3)


def fake_tf_serving(saved_model):
    """An HTTP stand-in that answers TF Serving's REST metadata and predict
    (TF Serving cannot be installed here): runs the SavedModel's signature."""
    loaded = tf.saved_model.load(saved_model)
    signature = loaded.signatures["serving_default"]
    spec = signature.structured_input_signature[1]["images"]

    def dims(shape):
        return {"dim": [{"size": str(-1 if d is None else d)} for d in shape]}

    metadata = {
        "model_spec": {"name": "tiny"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": {
                            "images": {
                                "dtype": "DT_FLOAT",
                                "tensor_shape": dims(spec.shape.as_list()),
                            }
                        },
                        "outputs": {
                            "codes": {
                                "dtype": "DT_UINT8",
                                "tensor_shape": dims([None, BITS // 8]),
                            }
                        },
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }
    calls = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self, status, body):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def do_GET(self):
            if self.path == "/v1/models/tiny/metadata":
                self.reply(200, metadata)
            else:
                self.reply(404, {"error": "no such model"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append(len(body["instances"]))
            images = tf.constant(np.asarray(body["instances"], np.float32))
            self.reply(
                200, {"predictions": signature(images=images)["codes"].numpy().tolist()}
            )

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, calls


def test_tf_serving_encoder(world):
    server, calls = fake_tf_serving(world["saved_model"])
    url = f"http://127.0.0.1:{server.server_port}/v1/models/tiny"
    try:
        encoder = TFServingEncoder(url)
        assert (encoder.image_shape, encoder.bits) == ((16, 16, 3), BITS)
        index = keras_hash.index.load(world["index_path"])
        with TestClient(create_app(encoder, index, world["catalog"])) as client:
            data = world["queries"][0]
            answer = client.post("/api/search/image?k=5", content=data).json()
            assert got(answer) == want_knn(
                world, expected_code(world["model"], data), 5
            )
            assert calls == [1]
            assert client.get("/api/info").json()["model"]["url"] == url
            server.shutdown()
            server.server_close()
            down = client.post("/api/search/image?k=5", content=data)
            assert down.status_code == 502 and "TF Serving at" in down.text
    finally:
        server.shutdown()
    with pytest.raises(ConnectionError, match="no keras_hash model metadata"):
        TFServingEncoder(url)
    with pytest.raises(ValueError, match="v1/models"):
        TFServingEncoder("localhost:8501")


def test_milvus_index(world, tmp_path):
    pytest.importorskip("milvus_lite")
    from keras_hash.serve.sources import open_index

    milvus = open_index(f"milvus:{tmp_path / 'codes.db'}", bits=BITS, collection="c")
    try:
        milvus.add(world["codes"], world["ids"])
        milvus.flush()
        with TestClient(
            create_app(world["encoder"], milvus, world["catalog"])
        ) as client:
            assert client.get("/api/info").json()["index"]["size"] == 40
            data = world["queries"][1]
            answer = client.post("/api/search/image?k=6", content=data).json()
            assert got(answer) == want_knn(
                world, expected_code(world["model"], data), 6
            )
            by_id = client.get(f"/api/search/id/{world['ids'][7]}?k=4").json()
            assert got(by_id) == want_knn(world, world["codes"][7:8], 4)
            unknown = client.get("/api/search/id/5?k=4")
            assert unknown.status_code == 404 and "not in the index" in unknown.text
    finally:
        milvus.close()
