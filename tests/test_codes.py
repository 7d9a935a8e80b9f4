"""Tests for keras_hash.codes: bit order, packing and Hamming distance."""

import numpy as np
import pytest

from keras_hash import codes
from tests import reference

pytestmark = pytest.mark.numpy_only  # no Keras session to reset


def _random_signs(rng, n, bits):
    return rng.choice(np.array([-1, 1], np.int8), size=(n, bits))


class TestPackCodes:
    def test_bit_order_matches_numpy_packbits(self):
        rng = np.random.default_rng(0)
        bits01 = rng.integers(0, 2, size=(7, 24)).astype(np.uint8)
        np.testing.assert_array_equal(
            codes.pack_codes(bits01, "bits"), np.packbits(bits01, axis=-1)
        )

    def test_hand_computed_byte(self):
        # Bit i sits under mask 0x80 >> i: bits 1,0,1,0,1,1,0,1 -> 0b10101101.
        z = np.array([[0.3, -1.2, 0.0, -0.1, 2.0, 1.0, -3.0, 0.5]])
        packed = codes.pack_codes(z, "logits")
        assert packed.dtype == np.uint8
        np.testing.assert_array_equal(packed, [[0b10101101]])

    def test_first_bit_is_most_significant_of_first_byte(self):
        signs = -np.ones((1, 16), np.int8)
        signs[0, 0] = 1
        signs[0, 15] = 1
        np.testing.assert_array_equal(codes.pack_codes(signs, "signs"), [[0x80, 0x01]])

    def test_every_convention_reads_the_same_code(self):
        rng = np.random.default_rng(1)
        signs = _random_signs(rng, 5, 32)
        bits01 = (signs > 0).astype(np.uint8)
        expected = np.packbits(bits01, axis=-1)
        scale = rng.uniform(0.1, 3.0, size=signs.shape)
        probabilities = 0.5 + signs * scale / 8  # 0.5 is bit 1, as sign(0) = +1
        cases = [
            (signs, "signs"),
            (signs.astype(np.float32), "signs"),
            (bits01, "bits"),
            (bits01.astype(bool), "bits"),
            (signs * scale, "logits"),
            (np.tanh(signs * scale), "logits"),
            (probabilities, "probabilities"),
        ]
        for x, convention in cases:
            np.testing.assert_array_equal(codes.pack_codes(x, convention), expected)

    def test_zero_is_plus_one(self):
        z = np.zeros((1, 8)) - np.array([0, 1, 0, 1, 0, 1, 0, 1]) * 0.5
        np.testing.assert_array_equal(codes.pack_codes(z, "logits"), [[0b10101010]])

    def test_probabilities_in_the_open_interval_are_read(self):
        # Before: values in (0, 1) read as signs, every one >= 0: constant codes.
        p = np.array([[0.9, 0.1, 0.6, 0.4, 0.51, 0.49, 0.2, 0.8]])
        np.testing.assert_array_equal(
            codes.pack_codes(p, "probabilities"), [[0b10101001]]
        )
        np.testing.assert_array_equal(
            codes.pack_codes(p, "probabilities", threshold=0.3), [[0b10111101]]
        )

    def test_one_stray_value_does_not_flip_the_zero_bits(self):
        # Before: 0/1 bits were bits, but one 0.5 made the array "real
        # values", so every 0 (x >= 0) became bit 1.
        bits01 = np.array([[1, 0, 0, 1, 0, 0, 0, 1]], np.float32)
        np.testing.assert_array_equal(codes.pack_codes(bits01, "bits"), [[0b10010001]])
        bits01[0, 2] = 0.5
        with pytest.raises(ValueError, match=r"'bits' reads only 0 and 1, found 0.5"):
            codes.pack_codes(bits01, "bits")

    @pytest.mark.parametrize(
        "x, convention, error, match",
        [
            ([[0, 1] * 4], "signs", ValueError, "found 0"),
            ([[-1, 1] * 4], "bits", ValueError, "found -1"),
            ([[0.2, 1.5] * 4], "probabilities", ValueError, "found 1.5"),
            ([[-0.2, 0.5] * 4], "probabilities", ValueError, "found -0.2"),
            ([[0, 1] * 4], "logits", ValueError, None),
            (np.ones((1, 8), bool), "logits", TypeError, "no sign"),
            (np.ones((1, 8), np.uint8), "signs", TypeError, "no sign"),
            ([[1.0] * 8], "sign", ValueError, "convention must be one of"),
        ],
    )
    def test_refuses_what_the_convention_cannot_read(self, x, convention, error, match):
        if match is None:  # integer logits are fine: sign is read
            codes.pack_codes(np.array(x), convention)
            return
        with pytest.raises(error, match=match):
            codes.pack_codes(np.array(x), convention)

    def test_convention_is_required(self):
        with pytest.raises(TypeError, match="convention"):
            codes.pack_codes(np.ones((1, 8)))

    def test_threshold_only_for_real_values(self):
        with pytest.raises(ValueError, match="threshold applies"):
            codes.pack_codes(np.ones((1, 8)), "signs", threshold=0.0)

    def test_stated_bits_must_match(self):
        with pytest.raises(ValueError, match="16 bits per row, expected 64"):
            codes.pack_codes(np.ones((2, 16)), "signs", bits=64)

    def test_roundtrip_unpack(self):
        rng = np.random.default_rng(2)
        signs = _random_signs(rng, 9, 40)
        unpacked = codes.unpack_codes(codes.pack_codes(signs, "signs"), bits=40)
        assert unpacked.dtype == np.int8
        np.testing.assert_array_equal(unpacked, signs)

    @pytest.mark.parametrize("shape", [(8,), (2, 3, 8)])
    def test_rejects_non_matrix(self, shape):
        with pytest.raises(ValueError, match="shape"):
            codes.pack_codes(np.ones(shape), "signs")

    def test_rejects_bits_not_multiple_of_8(self):
        with pytest.raises(ValueError, match="multiple of 8.*12"):
            codes.pack_codes(np.ones((2, 12)), "signs")

    @pytest.mark.parametrize("convention", ["signs", "logits", "probabilities", "bits"])
    def test_rejects_nan(self, convention):
        x = np.ones((1, 8))
        x[0, 3] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            codes.pack_codes(x, convention)

    def test_rejects_strings(self):
        with pytest.raises(TypeError, match="dtype"):
            codes.pack_codes(np.array([["a"] * 8]), "bits")


class TestCheckCodes:
    def test_packed_codes_pass(self):
        rng = np.random.default_rng(3)
        packed = rng.integers(0, 256, size=(50, 8), dtype=np.uint8)
        np.testing.assert_array_equal(codes.check_codes(packed, bits=64), packed)

    def test_collapsed_codes_pass(self):
        for value in (0, 255):
            codes.check_codes(np.full((50, 8), value, np.uint8), bits=64)

    def test_width_must_match_bits(self):
        packed = np.zeros((5, 8), np.uint8)
        with pytest.raises(ValueError, match="8 bytes wide but 128-bit codes"):
            codes.check_codes(packed, bits=128)

    @pytest.mark.parametrize("kind", ["bits", "signs"])
    def test_unpacked_arrays_are_refused(self, kind):
        # An unpacked [N, 64] 0/1 array misread as packed 512-bit codes.
        rng = np.random.default_rng(4)
        bits01 = rng.integers(0, 2, size=(20, 64)).astype(np.uint8)
        x = (
            bits01
            if kind == "bits"
            else (bits01.astype(np.int8) * 2 - 1).view(np.uint8)
        )
        with pytest.raises(ValueError, match="look like unpacked"):
            codes.check_codes(x, bits=512)
        codes.check_codes(x, bits=512, assume_packed=True)


class TestChecks:
    @pytest.mark.parametrize("bits", [8, 64, np.int64(16)])
    def test_check_bits_accepts(self, bits):
        assert codes.check_bits(bits) == int(bits)

    @pytest.mark.parametrize(
        "bits, error, text",
        [
            (0, ValueError, "positive, got 0"),
            (-8, ValueError, "-8"),
            (12, ValueError, "multiple of 8.*got 12"),
            (8.0, TypeError, "8.0"),
            (True, TypeError, "True"),
            ("8", TypeError, "'8'"),
        ],
    )
    def test_check_bits_rejects(self, bits, error, text):
        with pytest.raises(error, match=text):
            codes.check_bits(bits)

    def test_check_bits_unpacked_allows_any_positive(self):
        assert codes.check_bits(12, packed=False) == 12

    def test_check_packed_dtype(self):
        with pytest.raises(TypeError, match="uint8.*int64"):
            codes.check_packed(np.zeros((2, 8), np.int64))

    def test_check_packed_ndim(self):
        with pytest.raises(ValueError, match=r"\(8,\)"):
            codes.check_packed(np.zeros(8, np.uint8))

    def test_check_packed_width(self):
        with pytest.raises(ValueError, match="3 bytes wide but 32-bit"):
            codes.check_packed(np.zeros((2, 3), np.uint8), bits=32)

    def test_check_packed_returns_contiguous(self):
        x = np.zeros((4, 16), np.uint8)[:, ::2]
        out = codes.check_packed(x, bits=64)
        assert out.flags.c_contiguous


class TestAsWords:
    @pytest.mark.parametrize(
        "width, dtype",
        [
            (8, np.uint64),
            (16, np.uint64),
            (4, np.uint32),
            (12, np.uint32),
            (2, np.uint16),
            (6, np.uint16),
            (3, np.uint8),
        ],
    )
    def test_widest_word(self, width, dtype):
        x = np.arange(5 * width, dtype=np.uint8).reshape(5, width)
        words = codes.as_words(x)
        assert words.dtype == dtype
        np.testing.assert_array_equal(
            np.bitwise_count(words).sum(1), np.bitwise_count(x).sum(1)
        )


class TestHammingDistance:
    @pytest.mark.parametrize("bits", [8, 24, 64, 96, 128])
    def test_equals_inner_product_formula(self, bits):
        rng = np.random.default_rng(bits)
        a = _random_signs(rng, 13, bits)
        b = _random_signs(rng, 17, bits)
        inner = a.astype(np.int64) @ b.astype(np.int64).T
        expected = (bits - inner) // 2
        got = codes.hamming_distance(
            codes.pack_codes(a, "signs"), codes.pack_codes(b, "signs")
        )
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, expected)

    def test_equals_count_of_differing_signs(self):
        rng = np.random.default_rng(3)
        a, b = _random_signs(rng, 6, 16), _random_signs(rng, 4, 16)
        expected = (a[:, None, :] != b[None, :, :]).sum(-1)
        got = codes.hamming_distance(
            codes.pack_codes(a, "signs"), codes.pack_codes(b, "signs")
        )
        np.testing.assert_array_equal(got, expected)

    def test_hand_computed(self):
        a = np.array([[0b11110000, 0x00]], np.uint8)
        b = np.array([[0b00000000, 0xFF], [0b11110000, 0x00]], np.uint8)
        np.testing.assert_array_equal(codes.hamming_distance(a, b), [[12, 0]])

    def test_width_mismatch(self):
        with pytest.raises(ValueError, match="2 bytes vs 3 bytes"):
            codes.hamming_distance(
                np.zeros((1, 2), np.uint8), np.zeros((1, 3), np.uint8)
            )

    def test_dtype_mismatch(self):
        with pytest.raises(TypeError, match="float64"):
            codes.hamming_distance(np.zeros((1, 2), np.uint8), np.zeros((1, 2)))


def test_pack_codes_tensor_matches_numpy():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(4)
    z = rng.normal(size=(6, 32)).astype("float32")
    z[0, :8] = 0.0
    packed = keras.ops.convert_to_numpy(codes.pack_codes_tensor(z))
    np.testing.assert_array_equal(packed, np.packbits(z >= 0, axis=-1))


class TestKernel:
    """The one Hamming kernel: dtypes, tiling, and very long codes."""

    @pytest.mark.parametrize(
        "bits, dtype",
        [(8, np.uint8), (248, np.uint8), (256, np.uint16), (65528, np.uint16)]
        + [(65536, np.uint32), (1 << 20, np.uint32)],
    )
    def test_distance_dtype_holds_bits_plus_one(self, bits, dtype):
        assert codes.distance_dtype(bits) == dtype
        assert np.iinfo(dtype).max >= bits + 1

    def test_tiles_cover_every_pair(self):
        # More queries and database items than one tile, 24-bit codes
        # (3-byte rows, read as bytes), against counting differing bits.
        rng = np.random.default_rng(5)
        nq, n = codes.QUERY_TILE + 7, codes.DATABASE_TILE + 13
        a = rng.integers(0, 256, size=(nq, 3), dtype=np.uint8)
        b = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
        expected = reference.hamming(a, b)
        got = codes.hamming_distances(
            codes.word_planes(a), codes.word_planes(b), np.dtype(np.uint8)
        )
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)

    def test_blocks_stream_the_same_distances(self):
        rng = np.random.default_rng(6)
        a = rng.integers(0, 256, size=(5, 16), dtype=np.uint8)
        b = rng.integers(0, 256, size=(23, 16), dtype=np.uint8)
        qp, p = codes.word_planes(a), codes.word_planes(b)
        whole = codes.hamming_distances(qp, p, np.dtype(np.uint8))
        starts, parts = [], []
        for start, block in codes.hamming_blocks(qp, p, np.uint8, block=7):
            starts.append(start)
            parts.append(block.copy())
        assert starts == [0, 7, 14, 21]
        np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)

    def test_65536_bits_do_not_overflow(self):
        # Distances up to 65,536 need more than uint16.
        bits = 65536
        rng = np.random.default_rng(7)
        a = np.zeros((2, bits // 8), np.uint8)
        a[1] = rng.integers(0, 256, size=bits // 8, dtype=np.uint8)
        b = np.stack([np.full(bits // 8, 255, np.uint8), a[1], ~a[1]])
        expected = reference.hamming(a, b)
        assert expected[0, 0] == 65536 and expected[1, 2] == 65536
        got = codes.hamming_distances(
            codes.word_planes(a), codes.word_planes(b), codes.distance_dtype(bits)
        )
        assert got.dtype == np.uint32
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(codes.hamming_distance(a, b), expected)
