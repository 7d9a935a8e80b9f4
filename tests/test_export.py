"""Export: SavedModel (TF Serving contract) and TFLite variants return packed codes.

One HashNet is trained on scikit-learn's digits (8x8 grayscale, no download)
for the whole module; each TFLite variant is converted once. References are
independent of the exporters: ``np.packbits(z >= 0)`` on the model's own
``code_logits`` and a small numpy mAP.
"""

import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from PIL import Image
from sklearn.datasets import load_digits
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import keras_hash
from keras_hash import export
from tests.processes import kill_when_ready

BITS = 32
QUANTIZED = ("float16", "dynamic", "int8")
# Minimum bit agreement with model.encode measured on this model; quantized
# variants may flip only low-margin bits (see test_quantized_flips_only_small_z).
MIN_AGREEMENT = {"float16": 0.9995, "dynamic": 0.995, "int8": 0.995}


def digits():
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.images))
    images = data.images[order].astype("float32")[..., None] * 16  # 0..256 raw
    return np.minimum(images, 255), data.target[order]


def backbone():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, x)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    keras.utils.set_random_seed(0)
    images, labels = digits()
    model = keras_hash.HashNet(backbone(), bits=BITS)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(images[:1000], labels[:1000], batch_size=64, epochs=15, verbose=0)
    z = model.code_logits(images).numpy()
    root = tmp_path_factory.mktemp("export")
    path = root / "hashnet.keras"
    model.save(path)
    return {
        "model": model,
        "images": images,
        "labels": labels,
        "z": z,
        "reference": np.packbits(z >= 0, axis=-1),
        "root": root,
        "keras_path": path,
    }


@pytest.fixture(scope="module")
def tflite_files(trained):
    paths = {}
    for quantization in export.QUANTIZATIONS:
        representative = trained["images"][:500] if quantization == "int8" else None
        paths[quantization] = export.export_tflite(
            trained["model"],
            trained["root"] / f"codes_{quantization}.tflite",
            quantization=quantization,
            representative_images=representative,
        )
    return paths


@pytest.fixture(scope="module")
def saved_model(trained):
    path = export.export_saved_model(trained["model"], trained["root"] / "models")
    return path, tf.saved_model.load(path)


def litert_run(path, images):
    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")
    return runner(images=images)["codes"]


def litert_ops(path):
    interpreter = Interpreter(model_path=str(path))
    return {op["op_name"] for op in interpreter._get_ops_details()}


def bit_agreement(a, b):
    return float(np.mean(np.unpackbits(a, axis=-1) == np.unpackbits(b, axis=-1)))


def numpy_map(codes, labels, queries=200):
    """mAP over the full ranking (ties by index), first ``queries`` rows query."""
    bits = np.unpackbits(codes, axis=-1).astype(np.int32)
    q_bits, db_bits = bits[:queries], bits[queries:]
    dist = (q_bits[:, None, :] != db_bits[None, :, :]).sum(-1)
    order = np.argsort(dist, axis=1, kind="stable")
    rel = labels[queries:][order] == labels[:queries, None]
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, rel.shape[1] + 1)
    ap = (hits / ranks * rel).sum(1) / np.maximum(rel.sum(1), 1)
    return float(ap.mean())


# --- the model itself -----------------------------------------------------


def test_model_is_trained(trained):
    assert np.array_equal(
        trained["model"].encode(trained["images"]), trained["reference"]
    )
    assert numpy_map(trained["reference"], trained["labels"]) > 0.6


# --- SavedModel -----------------------------------------------------------


def test_saved_model_layout_and_codes_equal_encode(trained, saved_model):
    path, loaded = saved_model
    assert path == os.path.join(trained["root"] / "models", "keras_hash", "1")
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert os.listdir(os.path.dirname(path)) == ["1"]
    codes = loaded.signatures["serving_default"](images=tf.constant(trained["images"]))
    assert codes["codes"].dtype == tf.uint8
    np.testing.assert_array_equal(codes["codes"].numpy(), trained["reference"])


def test_saved_model_logits_signature(trained, saved_model):
    _, loaded = saved_model
    out = loaded.signatures["code_logits"](images=tf.constant(trained["images"][:64]))
    np.testing.assert_allclose(out["logits"].numpy(), trained["z"][:64], atol=1e-5)


def test_saved_model_cli_show(saved_model):
    path, _ = saved_model
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run(
        [
            cli,
            "show",
            "--dir",
            path,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shown = " ".join(shown.split())
    assert "inputs['images'] tensor_info: dtype: DT_FLOAT shape: (-1, 8, 8, 1)" in shown
    assert "outputs['codes'] tensor_info: dtype: DT_UINT8 shape: (-1, 4)" in shown
    assert "Method name is: tensorflow/serving/predict" in shown


def test_saved_model_rejects_wrong_image_shape(saved_model, trained):
    _, loaded = saved_model
    serve = loaded.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"8,8,1"):
        serve(images=tf.zeros((2, 9, 9, 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="float"):
        serve(images=tf.zeros((2, 8, 8, 1), tf.int32))


def test_existing_version_is_not_overwritten(trained, saved_model):
    path, _ = saved_model
    before = sorted(os.listdir(path))
    with pytest.raises(FileExistsError, match="already exists"):
        export.export_saved_model(trained["model"], trained["root"] / "models")
    assert sorted(os.listdir(path)) == before


def test_interrupted_export_leaves_no_version_dir(trained, tmp_path, monkeypatch):
    def interrupted(obj, export_dir, *args, **kwargs):
        os.makedirs(os.path.join(export_dir, "variables"))
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.saved_model, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.export_saved_model(trained["model"], tmp_path, version=3)
    assert os.listdir(tmp_path / "keras_hash") == []


@pytest.mark.parametrize("version", [0, -1, 1.5, "2", True])
def test_bad_version(trained, tmp_path, version):
    with pytest.raises((ValueError, TypeError), match="version"):
        export.export_saved_model(trained["model"], tmp_path, version=version)


# --- TFLite ---------------------------------------------------------------


def test_tflite_ops_are_builtins(tflite_files):
    for quantization, path in tflite_files.items():
        ops = litert_ops(path)
        assert not [op for op in ops if "FLEX" in op.upper() or op == "CUSTOM"], (
            quantization,
            ops,
        )
        assert {"GREATER_EQUAL", "MUL", "SUM", "CAST"} <= ops
        assert export.builtin_op_names(open(path, "rb").read()) == sorted(ops)


def test_tflite_float32_codes_equal_encode(trained, tflite_files):
    codes = litert_run(tflite_files["float32"], trained["images"])
    assert codes.dtype == np.uint8 and codes.shape == (len(trained["images"]), 4)
    np.testing.assert_array_equal(codes, trained["reference"])


def test_tflite_encoder_matches_interpreter(trained, tflite_files):
    encoder = export.TFLiteEncoder(tflite_files["float32"])
    assert (encoder.bits, encoder.image_shape) == (BITS, (8, 8, 1))
    codes = encoder.encode(trained["images"].astype(np.uint8), batch_size=100)
    np.testing.assert_array_equal(codes, trained["reference"])


@pytest.mark.parametrize("quantization", QUANTIZED)
def test_quantized_bit_agreement_and_map(trained, tflite_files, quantization):
    codes = litert_run(tflite_files[quantization], trained["images"])
    assert codes.dtype == np.uint8
    assert bit_agreement(codes, trained["reference"]) >= MIN_AGREEMENT[quantization]
    drop = numpy_map(trained["reference"], trained["labels"]) - numpy_map(
        codes, trained["labels"]
    )
    assert drop <= 0.005


@pytest.mark.parametrize("quantization", QUANTIZED)
def test_quantized_flips_only_small_z(trained, tflite_files, quantization):
    codes = litert_run(tflite_files[quantization], trained["images"])
    flipped = np.unpackbits(codes, axis=-1) != np.unpackbits(trained["reference"], -1)
    margin = np.abs(trained["z"][flipped])
    assert margin.size == 0 or margin.max() < 0.1 * np.abs(trained["z"]).max()


def test_quantized_files_are_smaller(tflite_files):
    size = {q: os.path.getsize(p) for q, p in tflite_files.items()}
    assert size["float16"] < 0.6 * size["float32"]
    assert size["dynamic"] <= 0.3 * size["float32"]
    assert size["int8"] <= 0.3 * size["float32"]


def test_tflite_no_overwrite_and_atomic(trained, tflite_files):
    path = tflite_files["float32"]
    before = open(path, "rb").read()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.export_tflite(trained["model"], path)
    assert open(path, "rb").read() == before
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp")]


def test_flex_op_fails_conversion(trained, tmp_path, monkeypatch):
    def shifted(z):
        return tf.cast(tf.bitwise.left_shift(tf.cast(z >= 0, tf.int32), 1), tf.uint8)

    monkeypatch.setattr(export, "pack_codes_tensor", shifted)
    with pytest.raises(ValueError, match="builtin"):
        export.export_tflite(trained["model"], tmp_path / "flex.tflite")
    assert not os.listdir(tmp_path)


# --- bad input ------------------------------------------------------------


@pytest.mark.parametrize(
    "images, error, message",
    [
        (np.zeros((2, 9, 9, 1), np.float32), ValueError, r"resize the images"),
        (np.zeros((2, 8, 8, 3), np.float32), ValueError, r"1 channel"),
        (np.zeros((8, 8, 1), np.float32), ValueError, r"batch axis"),
        (np.zeros((2, 8, 8, 1), np.float64), TypeError, r"float64"),
        (np.zeros((2, 8, 8, 1), np.int32), TypeError, r"int32"),
    ],
)
def test_tflite_encoder_bad_images(tflite_files, images, error, message):
    with pytest.raises(error, match=message):
        export.TFLiteEncoder(tflite_files["float32"]).encode(images)


def test_bits_not_multiple_of_8(tmp_path):
    model = keras_hash.HashNet(backbone(), bits=12)
    with pytest.raises(ValueError, match="multiple of 8.*12"):
        export.export_saved_model(model, tmp_path)
    with pytest.raises(ValueError, match="multiple of 8.*12"):
        export.export_tflite(model, tmp_path / "x.tflite")
    assert os.listdir(tmp_path) == []


def test_not_a_hash_model(tmp_path):
    plain = backbone()
    with pytest.raises(TypeError, match="HashModel"):
        export.export_tflite(plain, tmp_path / "x.tflite")
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(TypeError, match="not a keras_hash hash model"):
        export.load_hash_model(tmp_path / "plain.keras")


def test_missing_or_corrupt_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        export.load_hash_model(tmp_path / "missing.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.keras' is corrupt or truncated"):
        export.load_hash_model(tmp_path / "junk.keras")


def test_truncated_model_file_is_named_corrupt(trained, tmp_path):
    data = open(trained["keras_path"], "rb").read()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.keras' is corrupt") as error:
        export.load_hash_model(tmp_path / "cut.keras")
    assert "not found" not in str(error.value).lower()


def test_load_hash_model_round_trip(trained):
    model = export.load_hash_model(trained["keras_path"])
    np.testing.assert_array_equal(model.encode(trained["images"]), trained["reference"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"quantization": "int4"}, "quantization must be one of"),
        ({"quantization": "int8"}, "needs representative_images"),
        (
            {
                "quantization": "float16",
                "representative_images": np.zeros((1, 8, 8, 1)),
            },
            "only used with quantization='int8'",
        ),
        (
            {
                "quantization": "int8",
                "representative_images": np.zeros((4, 8, 8), np.float32),
            },
            "shape",
        ),
    ],
)
def test_bad_tflite_options(trained, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export.export_tflite(trained["model"], tmp_path / "x.tflite", **kwargs)
    with pytest.raises(ValueError, match=".tflite"):
        export.export_tflite(trained["model"], tmp_path / "x.bin")


def test_tflite_encoder_rejects_other_files(tmp_path, trained):
    with pytest.raises(FileNotFoundError):
        export.TFLiteEncoder(tmp_path / "missing.tflite")
    plain = tmp_path / "plain.tflite"
    converter = tf.lite.TFLiteConverter.from_keras_model(backbone())
    plain.write_bytes(converter.convert())
    with pytest.raises(ValueError, match="not a keras_hash TFLite export"):
        export.TFLiteEncoder(plain)


# --- TF Serving contract (offline: the model server cannot be installed) ----


def load_client():
    path = os.path.join(
        os.path.dirname(__file__), "..", "export", "serving", "client.py"
    )
    spec = importlib.util.spec_from_file_location("serving_client", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = load_client()


def serve_rest(loaded, body):
    """What TF Serving does with a row-format REST predict body."""
    request = json.loads(body)
    signature = loaded.signatures[request.get("signature_name", "serving_default")]
    images = tf.constant(np.asarray(request["instances"], np.float32))
    codes = signature(images=images)["codes"].numpy()
    return json.dumps({"predictions": codes.tolist()})


class FakeServing(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, loaded):
        self.loaded = loaded

    def Predict(self, request, context):
        signature = self.loaded.signatures[request.model_spec.signature_name]
        images = tf.make_ndarray(request.inputs["images"])
        outputs = signature(images=tf.constant(images))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


def test_rest_body_and_response(trained, saved_model):
    images = trained["images"][:5]
    body = client.rest_request_body(images)
    assert json.loads(body)["signature_name"] == "serving_default"
    response = serve_rest(saved_model[1], body)
    assert json.loads(response)["predictions"] == trained["reference"][:5].tolist()
    codes = client.codes_from_rest(response, bits=BITS)
    assert codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, trained["reference"][:5])


def test_rest_round_trip_over_http(trained, saved_model):
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(self.path)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            reply = serve_rest(saved_model[1], body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"127.0.0.1:{server.server_port}"
        codes = client.predict("rest", address, "hashnet", trained["images"][:7], BITS)
    finally:
        server.shutdown()
    assert seen == ["/v1/models/hashnet:predict"]
    np.testing.assert_array_equal(codes, trained["reference"][:7])


def test_grpc_round_trip(trained, saved_model):
    request = client.grpc_request(trained["images"][:6], "hashnet")
    parsed = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert parsed.model_spec.signature_name == "serving_default"
    assert list(parsed.inputs) == ["images"]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        FakeServing(saved_model[1]), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        codes = client.predict(
            "grpc", f"127.0.0.1:{port}", "hashnet", trained["images"][:6], BITS
        )
    finally:
        server.stop(None)
    assert codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, trained["reference"][:6])


def test_client_nearest_neighbours(trained):
    database, queries = trained["reference"][100:], trained["reference"][:20]
    distances, ids = client.nearest(database, queries, BITS, k=5)
    bits_db, bits_q = np.unpackbits(database, axis=-1), np.unpackbits(queries, axis=-1)
    brute = (bits_q[:, None, :] != bits_db[None, :, :]).sum(-1)
    expected = np.argsort(brute, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(distances, np.take_along_axis(brute, expected, 1))


def test_client_bad_responses():
    with pytest.raises(ValueError, match="not a predict response"):
        client.codes_from_rest('{"error": "Model not found"}', bits=BITS)
    with pytest.raises(ValueError, match="bytes wide"):
        client.codes_from_rest('{"predictions": [[1, 2, 3]]}', bits=BITS)
    with pytest.raises(ValueError, match="0..255"):
        client.codes_from_rest('{"predictions": [[1, 2, 3, 256]]}', bits=BITS)
    with pytest.raises(ValueError, match="protocol"):
        client.predict("http2", "localhost:1", "m", np.zeros((1, 8, 8, 1)), BITS)


# --- command line and example ---------------------------------------------


def run_script(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    root = os.path.join(os.path.dirname(__file__), "..")
    return subprocess.run(
        [sys.executable, *args], cwd=root, env=env, capture_output=True, text=True
    )


def test_command_line_and_tflite_example(trained, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(trained["images"][:40]):
        pixels = image[..., 0].astype(np.uint8)
        Image.fromarray(pixels, "L").save(folder / f"{i:03d}.png")
    command = (
        "export/export_model.py",
        f"--model={trained['keras_path']}",
        f"--base_dir={tmp_path / 'models'}",
        "--model_name=digits",
        "--tflite=float32,int8",
        f"--representative_dir={folder}",
    )
    done = run_script(*command)
    assert done.returncode == 0, done.stderr[-2000:]
    assert os.path.isfile(tmp_path / "models" / "digits" / "1" / "saved_model.pb")
    tflite = tmp_path / "models" / "digits_float32.tflite"
    assert os.path.isfile(tmp_path / "models" / "digits_int8.tflite")
    # A re-run into the same folder keeps what this model already wrote and
    # finishes the rest (here: the int8 file a killed run did not write).
    os.remove(tmp_path / "models" / "digits_int8.tflite")
    again = run_script(*command)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("already exported from this model") == 2
    assert os.path.isfile(tmp_path / "models" / "digits_int8.tflite")
    done = run_script(
        "examples/encode_images_tflite.py",
        f"--tflite={tflite}",
        f"--images={folder}",
        f"--output={tmp_path / 'codes.npy'}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    codes = np.load(tmp_path / "codes.npy")
    np.testing.assert_array_equal(codes, trained["reference"][:40])


def test_command_line_refuses_other_outputs_and_non_images(trained, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(folder / "a.png")
    (folder / "notes.txt").write_text("not an image")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "digits_float32.tflite").write_bytes(b"someone else's")
    common = (
        "export/export_model.py",
        f"--model={trained['keras_path']}",
        f"--tflite_dir={tmp_path / 'out'}",
        "--model_name=digits",
    )
    done = run_script(*common, "--tflite=int8", f"--representative_dir={folder}")
    assert done.returncode != 0
    assert "notes.txt" in done.stderr and "are not images" in done.stderr
    done = run_script(*common, "--tflite=float32")
    assert done.returncode != 0
    assert "digits_float32.tflite already exists" in done.stderr


def test_command_line_errors(trained, tmp_path):
    done = run_script(
        "export/export_model.py", f"--model={tmp_path / 'nope.keras'}", "--tflite=int8"
    )
    assert done.returncode != 0
    assert "no model file" in done.stderr and "nope.keras" in done.stderr
    done = run_script("export/export_model.py", "--help")
    for flag in ("--model", "--base_dir", "--tflite", "--representative_dir"):
        assert flag in done.stdout


# --- issue 24: non-finite images, permissions, faults ---------------------


def with_bad_pixel(images, value, row=5):
    images = np.array(images, np.float32)
    images[row, 3, 4, 0] = value
    return images


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_saved_model_refuses_non_finite_images(trained, saved_model, value):
    _, loaded = saved_model
    bad = tf.constant(with_bad_pixel(trained["images"][:8], value))
    for signature in ("serving_default", "code_logits"):
        with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
            loaded.signatures[signature](images=bad)
    good = loaded.signatures["serving_default"](
        images=tf.constant(trained["images"][:8])
    )
    np.testing.assert_array_equal(good["codes"].numpy(), trained["reference"][:8])


@pytest.mark.parametrize("value", [np.nan, -np.inf])
def test_tflite_encoder_refuses_non_finite_images(trained, tflite_files, value):
    encoder = export.TFLiteEncoder(tflite_files["float32"])
    with pytest.raises(ValueError, match=r"NaN or Inf.*\(image 5 of 8, 1 in all\)"):
        encoder.encode(with_bad_pixel(trained["images"][:8], value))


def test_raw_tflite_graph_cannot_refuse_and_still_runs(trained, tflite_files):
    # The documented limit: a .tflite graph cannot raise. It returns codes for
    # the corrupt image (callers of the raw file must check their input) and
    # the other images' codes are unaffected.
    codes = litert_run(
        tflite_files["float32"], with_bad_pixel(trained["images"][:8], np.nan)
    )
    assert codes.shape == (8, 4) and codes.dtype == np.uint8
    keep = np.arange(8) != 5
    np.testing.assert_array_equal(codes[keep], trained["reference"][:8][keep])


@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_int8_calibration_refuses_non_finite_images(trained, tmp_path, value):
    # Before the fix an Inf pixel reached the converter and killed the process
    # ("scale out of expressed type range").
    representative = with_bad_pixel(trained["images"][:50], value, row=17)
    with pytest.raises(ValueError, match=r"NaN or Inf.*\(image 17 of 50, 1 in all\)"):
        export.export_tflite(
            trained["model"],
            tmp_path / "q.tflite",
            quantization="int8",
            representative_images=representative,
        )
    assert os.listdir(tmp_path) == []


def test_exports_are_readable_under_the_umask(trained, tmp_path):
    old = os.umask(0o022)
    try:
        version = export.export_saved_model(trained["model"], tmp_path, "m", 4)
        tflite = export.export_tflite(trained["model"], tmp_path / "m.tflite")
    finally:
        os.umask(old)
    assert os.stat(version).st_mode & 0o777 == 0o755
    assert os.stat(tflite).st_mode & 0o777 == 0o644
    for folder, dirs, names in os.walk(version):
        for name in dirs:
            assert os.stat(os.path.join(folder, name)).st_mode & 0o005 == 0o005
        for name in names:
            assert os.stat(os.path.join(folder, name)).st_mode & 0o004, name


KILLED_EXPORT = """
import sys, time
from keras_hash import export

model = export.load_hash_model(sys.argv[1])
write_directory_atomic = export.write_directory_atomic

def hang_before_rename(path, write):
    def write_then_hang(staging):
        write(staging)  # the whole SavedModel, in the staging folder
        print("written", flush=True)
        time.sleep(120)

    write_directory_atomic(path, write_then_hang)

export.write_directory_atomic = hang_before_rename
export.export_saved_model(model, sys.argv[2], "m", 1)
"""


def test_export_killed_leaves_no_version_and_is_cleaned_up(trained, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    argv = [sys.executable, "-c", KILLED_EXPORT, str(trained["keras_path"]), tmp_path]
    kill_when_ready(argv, "written", env=env)
    left = os.listdir(tmp_path / "m")
    assert len(left) == 1 and left[0].startswith(".tmp-")  # the staging folder
    assert export.next_version(tmp_path / "m") == 1  # TF Serving sees no version
    path = export.export_saved_model(trained["model"], tmp_path, "m", 1)
    assert os.listdir(tmp_path / "m") == ["1"]  # the stale staging folder is gone
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
