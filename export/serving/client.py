"""Query a served keras_hash encoder over REST or gRPC; search a HammingIndex.

The server runs a SavedModel from ``keras_hash.export.export_saved_model``:
signature ``serving_default`` takes ``images`` (float32 raw pixels,
``[N, *image_shape]``) and returns ``codes`` (uint8 ``[N, bits // 8]``).

REST (port 8501): ``POST /v1/models/<name>:predict`` with
``{"signature_name": "serving_default", "instances": [...]}``; TF Serving
answers ``{"predictions": [[byte, ...], ...]}``, uint8 as JSON integers.
gRPC (port 8500): ``PredictionService.Predict`` with a ``PredictRequest``.

```
python export/serving/client.py --protocol=rest --server=localhost:8501 \\
    --image_shape=224,224,3 --database_dir=catalog/ --query_dir=queries/ --k=5
```
"""

from __future__ import annotations

import json
import urllib.request

import numpy as np

from keras_hash import HammingIndex
from keras_hash.codes import check_packed
from keras_hash.export import CODES_OUTPUT, INPUT_NAME, SERVING_SIGNATURE

PROTOCOLS = ("rest", "grpc")


def rest_request_body(images: np.ndarray, signature: str = SERVING_SIGNATURE) -> str:
    """The JSON body of a REST predict request (row format, ``instances``)."""
    images = np.asarray(images, np.float32)
    return json.dumps({"signature_name": signature, "instances": images.tolist()})


def codes_from_rest(response: str | bytes | dict, bits: int) -> np.ndarray:
    """Packed codes (uint8 ``[N, bits // 8]``) from a REST predict response."""
    if not isinstance(response, dict):
        response = json.loads(response)
    if "predictions" not in response:
        raise ValueError(f"not a predict response: {str(response)[:200]}")
    rows = np.asarray(response["predictions"])
    if rows.size and (rows.min() < 0 or rows.max() > 255):
        raise ValueError("codes must be bytes 0..255, got values outside that range")
    codes = rows.astype(np.uint8).reshape(len(rows), -1)
    return check_packed(codes, bits=bits)


def _serving_apis():
    """TF Serving's protos, or an error naming how to install them."""
    try:
        import grpc  # noqa: F401
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f'the gRPC client needs {error.name}: pip install "keras-hash[serving]" '
            'and pip install --no-deps "tensorflow-serving-api>=2.18" (without '
            "--no-deps it installs a second TensorFlow)"
        ) from error
    return predict_pb2, prediction_service_pb2_grpc


def grpc_request(images: np.ndarray, model_name: str, signature=SERVING_SIGNATURE):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for images."""
    import tensorflow as tf

    predict_pb2, _ = _serving_apis()

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    request.inputs[INPUT_NAME].CopyFrom(
        tf.make_tensor_proto(np.asarray(images, np.float32))
    )
    return request


def codes_from_grpc(response, bits: int) -> np.ndarray:
    """Packed codes (uint8 ``[N, bits // 8]``) from a ``PredictResponse``."""
    import tensorflow as tf

    if CODES_OUTPUT not in response.outputs:
        raise ValueError(f"response has no {CODES_OUTPUT!r} output")
    return check_packed(tf.make_ndarray(response.outputs[CODES_OUTPUT]), bits=bits)


def predict_rest(server: str, model_name: str, images, bits: int, timeout=30.0):
    """Codes for images from a TF Serving REST endpoint (``host:port``)."""
    request = urllib.request.Request(
        f"http://{server}/v1/models/{model_name}:predict",
        data=rest_request_body(images).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return codes_from_rest(reply.read(), bits)


def predict_grpc(server: str, model_name: str, images, bits: int, timeout=30.0):
    """Codes for images from a TF Serving gRPC endpoint (``host:port``)."""
    _, prediction_service_pb2_grpc = _serving_apis()
    import grpc

    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(grpc_request(images, model_name), timeout=timeout)
    return codes_from_grpc(response, bits)


def predict(protocol: str, server: str, model_name: str, images, bits: int):
    """Codes from the server over ``"rest"`` or ``"grpc"``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    call = predict_rest if protocol == "rest" else predict_grpc
    return call(server, model_name, images, bits)


def nearest(database_codes, query_codes, bits: int, k: int):
    """``(distances, ids)`` of the k nearest database codes for each query."""
    index = HammingIndex(bits)
    index.add(database_codes)
    return index.search(query_codes, k)


def main(argv):
    del argv
    from absl import flags

    from keras_hash.export import read_images

    f = flags.FLAGS
    shape = tuple(int(d) for d in f.image_shape.split(","))
    database, db_names = read_images(f.database_dir, shape)
    queries, query_names = read_images(f.query_dir, shape)
    db_codes = predict(f.protocol, f.server, f.model_name, database, f.bits)
    query_codes = predict(f.protocol, f.server, f.model_name, queries, f.bits)
    distances, ids = nearest(db_codes, query_codes, f.bits, f.k)
    for name, dist, row in zip(query_names, distances, ids, strict=True):
        hits = ", ".join(f"{db_names[i]} ({d})" for i, d in zip(row, dist, strict=True))
        print(f"{name}: {hits}")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_enum("protocol", "rest", PROTOCOLS, "rest (port 8501) or grpc (8500).")
    flags.DEFINE_string("server", "localhost:8501", "TF Serving host:port.")
    flags.DEFINE_string("model_name", "keras_hash", "Model name in models.config.")
    flags.DEFINE_integer("bits", None, "Code length of the served model.")
    flags.DEFINE_string(
        "image_shape", None, "height,width,channels of the model input, e.g. 8,8,1."
    )
    flags.DEFINE_string("database_dir", None, "Folder of images to index.")
    flags.DEFINE_string("query_dir", None, "Folder of query images.")
    flags.DEFINE_integer("k", 5, "Neighbours per query.")
    flags.mark_flags_as_required(["bits", "image_shape", "database_dir", "query_dir"])
    app.run(main)
