"""Hostile inputs and faults (issue 24): generated cases at every public boundary.

Each property draws inputs with Hypothesis and states the contract of
``docs/guarantees.md``: the call returns the answer of an independent numpy
reference, or raises ``ValueError``/``TypeError`` (``IndexError`` for
indexing) with a message; never a crash, a NaN or a silently wrong result.
Example counts are bounded and derandomized, so the module runs in CI in
well under two minutes on two cores.

Fault tests kill a writer with SIGKILL mid-save. Others live beside the code
they cover: killed export in
``tests/test_export.py::test_export_killed_leaves_no_version_and_is_cleaned_up``,
threads in ``tests/test_index.py::TestThreads``, the example's final phase in
``tests/test_train_cifar.py::test_run_killed_after_training_evaluates_without_training_again``.
"""

import io
import json
import os
import sys
import tracemalloc
import zipfile

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import keras_hash
from keras_hash import export, files
from keras_hash import metrics as evaluation
from keras_hash.index import HammingIndex
from tests import reference
from tests.processes import kill_when_ready

pytestmark = pytest.mark.numpy_only  # the Keras model is built once, below


def bounded(examples):
    """Settings of every property: few, reproducible examples, no deadline."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


REFUSED = (ValueError, TypeError)
DTYPES = st.sampled_from(
    ["uint8", "int8", "uint16", "int32", "int64", "uint64", "float32", "float64"]
)


reference_distances = reference.hamming  # tests/reference.py, the one brute force


# ---------------------------------------------------------------------------
# codes: pack, unpack, Hamming distance


def readable(x, convention):
    """Whether pack_codes can read x under the stated convention."""
    if x.ndim != 2 or x.shape[1] == 0 or x.shape[1] % 8:
        return False
    if convention == "bits":
        return bool(np.isin(x, (0, 1)).all())
    if x.dtype.kind in "ub":  # unsigned: no sign to read
        return False
    if convention == "signs":
        return bool(np.isin(x, (-1, 1)).all())
    finite = x.dtype.kind != "f" or bool(np.isfinite(x).all())
    if convention == "probabilities":
        return finite and bool(((x >= 0) & (x <= 1)).all())
    return finite


REFERENCE_BITS = {
    "signs": lambda x: x > 0,
    "bits": lambda x: x == 1,
    "logits": lambda x: x >= 0,
    "probabilities": lambda x: x >= 0.5,
}


@bounded(80)
@given(
    hnp.arrays(
        DTYPES,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=17),
        elements={"allow_nan": True, "allow_infinity": True},
    ),
    st.sampled_from(sorted(REFERENCE_BITS)),
)
def test_pack_codes_packs_the_reference_bits_or_refuses(x, convention):
    try:
        packed = keras_hash.pack_codes(x, convention)
    except REFUSED:
        assert not readable(x, convention)
        return
    assert readable(x, convention)
    bits = REFERENCE_BITS[convention](x)
    np.testing.assert_array_equal(packed, np.packbits(bits.astype(bool), axis=1))
    unpacked = keras_hash.unpack_codes(packed, x.shape[1])
    np.testing.assert_array_equal(unpacked, np.where(bits, 1, -1))


@bounded(80)
@given(
    hnp.arrays(DTYPES, hnp.array_shapes(min_dims=1, max_dims=3, max_side=9)),
    hnp.arrays(DTYPES, hnp.array_shapes(min_dims=1, max_dims=3, max_side=9)),
)
def test_hamming_distance_is_the_reference_or_refuses(a, b):
    valid = (
        a.dtype == b.dtype == np.uint8
        and a.ndim == b.ndim == 2
        and a.shape[1] == b.shape[1]
    )
    if not valid:
        with pytest.raises(REFUSED):
            keras_hash.hamming_distance(a, b)
        return
    got = keras_hash.hamming_distance(a, b)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, reference_distances(a, b))


@bounded(40)
@given(st.binary(min_size=0, max_size=64), st.sampled_from([8, 16, 24, 64]))
def test_random_bytes_as_codes(data, bits):
    width = bits // 8
    rows = len(data) // width
    packed = np.frombuffer(data[: rows * width], np.uint8).reshape(rows, width)
    unpacked = keras_hash.unpack_codes(packed, bits)
    np.testing.assert_array_equal(keras_hash.pack_codes(unpacked, "signs"), packed)
    if rows:
        np.testing.assert_array_equal(
            keras_hash.hamming_distance(packed, packed),
            reference_distances(packed, packed),
        )
    with pytest.raises(ValueError):
        keras_hash.unpack_codes(packed, bits + 8)


# ---------------------------------------------------------------------------
# the index: ids, k, radius, RangeResult indexing

ID = st.integers(min_value=-(2**65), max_value=2**65)
SMALL_ID = st.integers(min_value=0, max_value=50)


@bounded(80)
@given(
    st.lists(st.one_of(ID, SMALL_ID, st.just(2**63 - 1), st.just(2**63)), max_size=6),
    st.sampled_from(["list", "int64", "uint64"]),
)
def test_ids_are_stored_exactly_or_refused(ids, kind):
    index = HammingIndex(16, backend="numpy")
    index.add(np.zeros((2, 2), np.uint8), ids=[7, 3])
    codes = np.arange(2 * len(ids), dtype=np.uint8).reshape(-1, 2)
    if kind != "list":
        info = np.iinfo(kind)
        assume(all(info.min <= i <= info.max for i in ids))
        ids = np.array(ids, kind)
    wanted = [int(i) for i in ids]
    valid = (
        all(-(2**63) <= i <= 2**63 - 1 for i in wanted)
        and len(set(wanted) | {3, 7}) == len(wanted) + 2
    )
    if not valid:
        with pytest.raises(ValueError):
            index.add(codes, ids=ids)
        np.testing.assert_array_equal(index.ids, [3, 7])  # unchanged
        return
    index.add(codes, ids=ids)
    order = np.argsort(np.array([3, 7, *wanted], dtype=object), kind="stable")
    all_codes = np.concatenate([np.zeros((2, 2), np.uint8), codes])
    assert [int(i) for i in index.ids] == sorted([3, 7, *wanted])
    np.testing.assert_array_equal(index.codes, all_codes[order.astype(int)])


@pytest.fixture(scope="module")
def small_index():
    rng = np.random.default_rng(3)
    database = rng.integers(0, 256, size=(40, 2), dtype=np.uint8)
    ids = rng.permutation(1000)[:40]
    index = HammingIndex(16, backend="numpy")
    index.add(database, ids=ids)
    return index, database, ids


ANY_NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.floats(allow_nan=True),
    st.integers(min_value=-5, max_value=60).map(np.int64),
    st.integers(min_value=0, max_value=60).map(np.uint8),
)


@bounded(60)
@given(k=ANY_NUMBER, queries=st.integers(0, 3))
def test_search_k_is_the_reference_or_refused(small_index, k, queries):
    index, database, ids = small_index
    q = database[:queries] ^ np.uint8(5)
    valid = (
        not isinstance(k, (bool, float))
        and isinstance(k, (int, np.integer))
        and 1 <= k <= 40
    )
    if not valid:
        with pytest.raises(REFUSED):
            index.search(q, k)
        return
    distances, got = index.search(q, k)
    assert distances.shape == got.shape == (queries, int(k))
    reference = reference_distances(q, database)
    for row in range(queries):
        order = np.lexsort((ids, reference[row]))[: int(k)]
        np.testing.assert_array_equal(got[row], ids[order])
        np.testing.assert_array_equal(distances[row], reference[row][order])


@bounded(60)
@given(radius=ANY_NUMBER, queries=st.integers(0, 3), i=st.integers(-6, 6))
def test_range_search_is_the_reference_or_refused(small_index, radius, queries, i):
    index, database, ids = small_index
    q = database[:queries] ^ np.uint8(9)
    valid = (
        not isinstance(radius, (bool, float))
        and isinstance(radius, (int, np.integer))
        and radius >= 0
    )
    if not valid:
        with pytest.raises(REFUSED):
            index.range_search(q, radius)
        return
    result = index.range_search(q, radius)
    assert len(result) == queries and result.lims[0] == 0
    if not -queries <= i < queries:
        with pytest.raises(IndexError):
            result[i]
        return
    row = i % queries  # Python semantics: -1 is the last query
    reference = reference_distances(q, database)[row]
    inside = np.flatnonzero(reference <= radius)
    inside = inside[np.lexsort((ids[inside], reference[inside]))]
    distances, got = result[i]
    np.testing.assert_array_equal(got, ids[inside])
    np.testing.assert_array_equal(distances, reference[inside])


# ---------------------------------------------------------------------------
# metrics: labels


LABELS = st.one_of(
    hnp.arrays(np.int64, 8, elements=st.integers(-3, 3)),
    hnp.arrays(np.int8, (8, 3), elements=st.integers(-1, 1)),  # ±1 attributes
    hnp.arrays(np.int64, (8, 3), elements=st.integers(0, 1)),
    hnp.arrays(np.float32, (8, 3), elements=st.sampled_from([0.0, 1.0, 0.5, np.nan])),
    hnp.arrays(np.float64, 8, elements=st.floats(-2, 2)),
    hnp.arrays(bool, (8, 3)),
)


@bounded(60)
@given(LABELS, st.integers(1, 4))
def test_metrics_are_the_reference_or_refused(labels, queries):
    rng = np.random.default_rng(queries)
    codes = rng.integers(0, 256, size=(8, 1), dtype=np.uint8)
    kwargs = dict(
        query_codes=codes[:queries],
        query_labels=labels[:queries],
        database_codes=codes,
        database_labels=labels,
        bits=8,
        assume_packed=True,  # random single bytes may all be 0 or 1
    )
    valid = labels.dtype == bool or (
        np.issubdtype(labels.dtype, np.integer)
        if labels.ndim == 1
        else bool(np.isin(labels, (0, 1)).all())
    )
    if not valid:
        with pytest.raises(REFUSED):
            evaluation.mean_average_precision(**kwargs)
        return
    got = evaluation.mean_average_precision(**kwargs)
    curve = evaluation.precision_recall_curve(**kwargs)
    assert np.isfinite(curve.precision).all() and np.isfinite(curve.recall).all()
    # reference: float distances, a stable sort, relevance from the labels
    dist = reference_distances(codes[:queries], codes)
    if labels.ndim == 1:
        relevant = labels[:queries, None] == labels[None, :]
    else:
        relevant = labels[:queries].astype(float) @ labels.T.astype(float) > 0
    aps = []
    for row in range(queries):
        rel = relevant[row][np.argsort(dist[row], kind="stable")]
        hits = np.cumsum(rel)
        ranks = np.flatnonzero(rel)
        aps.append(np.mean(hits[ranks] / (ranks + 1)) if ranks.size else 0.0)
    assert got == pytest.approx(np.mean(aps), abs=1e-12)


# ---------------------------------------------------------------------------
# index files: truncations, flipped bytes, random bytes


def make_original():
    index = HammingIndex(32, backend="numpy")
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 256, size=(30, 4), dtype=np.uint8)
    index.add(codes, ids=np.arange(30) * 3)
    return index


_ORIGINAL = make_original()


@pytest.fixture(scope="module")
def original_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "good.khi"
    _ORIGINAL.save(path)
    return path.read_bytes()


def load_bytes(tmp_path, data):
    """Loads bytes as an index file, tracing peak memory."""
    path = tmp_path / "fuzzed.khi"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        try:
            loaded = HammingIndex.load(path, backend="numpy")
        except ValueError as error:
            loaded = error
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return loaded, peak


def assert_same_or_refused(loaded, peak, size):
    # Memory is bounded by the file: a few copies of it, never a declared size.
    assert peak < 8 * size + (1 << 20), peak
    if isinstance(loaded, ValueError):
        assert "HammingIndex" in str(loaded) or "header" in str(loaded)
        return
    np.testing.assert_array_equal(loaded.ids, _ORIGINAL.ids)
    np.testing.assert_array_equal(loaded.codes, _ORIGINAL.codes)


@bounded(200)
@given(
    flips=st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4
    )
)
def test_flipped_bytes_are_refused_or_harmless(original_file, tmp_path_factory, flips):
    data = bytearray(original_file)
    for position, xor in flips:
        data[position % len(data)] ^= xor
    loaded, peak = load_bytes(tmp_path_factory.mktemp("f"), bytes(data))
    assert_same_or_refused(loaded, peak, len(data))


@bounded(80)
@given(cut=st.integers(0, 10**6))
def test_truncated_files_are_refused(original_file, tmp_path_factory, cut):
    data = original_file[: cut % len(original_file)]
    loaded, peak = load_bytes(tmp_path_factory.mktemp("t"), data)
    assert isinstance(loaded, ValueError)
    assert peak < 8 * len(original_file) + (1 << 20)


@bounded(80)
@given(data=st.binary(max_size=2048), prefix=st.sampled_from([b"", b"PK\x03\x04"]))
def test_random_bytes_are_refused(tmp_path_factory, data, prefix):
    loaded, peak = load_bytes(tmp_path_factory.mktemp("r"), prefix + data)
    assert isinstance(loaded, ValueError)


@bounded(40)
@given(
    count=st.integers(-3, 2**62),
    bits=st.one_of(st.integers(-8, 2**40), st.booleans(), st.text(max_size=3)),
    rows=st.integers(0, 2**62),
)
def test_forged_headers_and_shapes_are_refused_without_allocating(
    tmp_path_factory, count, bits, rows
):
    """A header and .npy shapes that lie about the data size (issue 24 row 11)."""
    header = {
        "magic": "keras_hash.HammingIndex",
        "format_version": 1,
        "bits": bits,
        "count": count,
        "sha256": "0" * 64,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        width = bits // 8 if isinstance(bits, int) and bits > 0 else 4
        for name, dtype, shape in [
            ("header", np.uint8, None),
            ("codes", np.uint8, (rows, width)),
            ("ids", np.dtype("<i8"), (rows,)),
        ]:
            body = json.dumps(header).encode() if shape is None else b"\0" * 64
            npy = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                npy,
                {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                    "fortran_order": False,
                    "shape": shape or (len(body),),
                },
            )
            archive.writestr(f"{name}.npy", npy.getvalue() + body)
    assume(not (rows == 0 and count == 0))  # an honest empty index loads
    loaded, peak = load_bytes(tmp_path_factory.mktemp("h"), buffer.getvalue())
    assert isinstance(loaded, ValueError)
    assert peak < 1 << 20


# ---------------------------------------------------------------------------
# images: NaN and Inf anywhere


_MODEL = []


def model():
    """One small HashNet for the module (built once; Hypothesis reuses it)."""
    if not _MODEL:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4, 4, 2))
        x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        _MODEL.append(keras_hash.HashNet(keras.Model(inputs, x), bits=8))
    return _MODEL[0]


BAD_PIXELS = st.lists(
    st.tuples(
        st.integers(0, 9),
        st.integers(0, 3),
        st.integers(0, 3),
        st.integers(0, 1),
        st.sampled_from([np.nan, np.inf, -np.inf]),
    ),
    max_size=3,
)


def with_pixels(pixels):
    images = np.random.default_rng(0).normal(size=(10, 4, 4, 2)).astype(np.float32)
    for n, h, w, c, value in pixels:
        images[n, h, w, c] = value
    return images


@bounded(20)
@given(BAD_PIXELS, st.integers(1, 6), st.booleans())
def test_encode_refuses_exactly_the_non_finite_images(pixels, batch_size, dataset):
    import tensorflow as tf

    images = with_pixels(pixels)
    stream = (
        tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
        if dataset
        else images
    )
    if not pixels:
        clean = model().encode(stream, batch_size=batch_size)
        np.testing.assert_array_equal(clean, model().encode(images, batch_size=10))
        return
    first = min(n for n, *_ in pixels)
    with pytest.raises(ValueError, match=rf"NaN or Inf.*\(image {first}, "):
        model().encode(stream, batch_size=batch_size)


@bounded(40)
@given(BAD_PIXELS)
def test_check_images_refuses_exactly_the_non_finite_images(pixels):
    images = with_pixels(pixels)
    if not pixels:
        assert export.check_images(images, (4, 4, 2)).shape == (10, 4, 4, 2)
        return
    first = min(n for n, *_ in pixels)
    bad = len({n for n, *_ in pixels})
    with pytest.raises(ValueError, match=rf"\(image {first} of 10, {bad} in all\)"):
        export.check_images(images, (4, 4, 2))


# ---------------------------------------------------------------------------
# faults: SIGKILL during a save


# The child imports the index without keras_hash/__init__ (no TensorFlow).
KILLED_SAVE = """
import sys, time, types
package = types.ModuleType("keras_hash")
package.__path__ = [sys.argv[1]]
sys.modules["keras_hash"] = package
import numpy as np
from keras_hash import index as index_module
from keras_hash.index import file as index_file

def write_half_then_hang(path, arrays):
    with open(path, "wb") as file:
        file.write(b"PK" + b"\\0" * 100_000)
        file.flush()
    print("writing", flush=True)
    time.sleep(120)

index_file._write_npz = write_half_then_hang
index = index_module.HammingIndex(64, backend="numpy")
index.add(np.full((5000, 8), 7, np.uint8))
index.save(sys.argv[2])
"""


def test_sigkill_during_index_save(tmp_path):
    path = tmp_path / "index.khi"
    old = HammingIndex(64, backend="numpy")
    old.add(np.arange(80, dtype=np.uint8).reshape(10, 8), ids=np.arange(10) * 2)
    old.save(path)
    before = path.read_bytes()
    package = os.path.dirname(keras_hash.__file__)
    argv = [sys.executable, "-c", KILLED_SAVE, package, str(path)]
    pid = kill_when_ready(argv, "writing")
    # The old file is intact; the killed writer's staging file is left over.
    assert path.read_bytes() == before
    stale = [n for n in os.listdir(tmp_path) if n.startswith(files.STAGING_PREFIX)]
    assert len(stale) == 1 and stale[0].endswith(".khi")
    assert f"-{pid}-" in stale[0]
    loaded = HammingIndex.load(path, backend="numpy")
    np.testing.assert_array_equal(loaded.ids, np.arange(10) * 2)
    # The next save removes it.
    loaded.add(np.zeros((1, 8), np.uint8))
    loaded.save(path)
    assert os.listdir(tmp_path) == ["index.khi"]
    assert len(HammingIndex.load(path, backend="numpy")) == 11


KILLED_DIRECTORY = """
import sys, time, types
package = types.ModuleType("keras_hash")
package.__path__ = [sys.argv[1]]
sys.modules["keras_hash"] = package
from keras_hash import files

def half(staging):
    open(staging + "/saved_model.pb", "wb").write(b"half")
    print("writing", flush=True)
    time.sleep(120)

files.write_directory_atomic(sys.argv[2], half)
"""


def test_sigkill_during_directory_write(tmp_path):
    package = os.path.dirname(keras_hash.__file__)
    argv = [sys.executable, "-c", KILLED_DIRECTORY, package, str(tmp_path / "1")]
    kill_when_ready(argv, "writing")
    left = os.listdir(tmp_path)
    assert "1" not in left and len(left) == 1  # no half version directory
    files.write_directory_atomic(tmp_path / "2", lambda p: None)
    assert os.listdir(tmp_path) == ["2"]
