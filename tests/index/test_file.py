"""The checked index file format (keras_hash.index.file).

The format's hostile-file cases run through both in-memory kinds in
tests/index/test_exact.py, tests/index/test_ivf.py, tests/index/test_faults.py
and tests/test_hostile.py; here: the header reader, against hand-written values.
"""

import json
import zipfile

import numpy as np
import pytest

from keras_hash.index.file import load_archive, parse_json_header, save_archive


class TestHeader:
    def test_magic_and_version(self):
        raw = json.dumps({"magic": "m", "format_version": 1, "x": 2}).encode()
        assert parse_json_header("f", raw, "m", 1, "thing")["x"] == 2
        with pytest.raises(ValueError, match="is not a thing file"):
            parse_json_header("f", raw, "other", 1, "thing")
        with pytest.raises(ValueError, match="unsupported format_version 1"):
            parse_json_header("f", raw, "m", 2, "thing")
        with pytest.raises(ValueError, match="unreadable thing header"):
            parse_json_header("f", b"\xff{", "m", 1, "thing")

    def test_round_trip_and_checksum(self, tmp_path):
        path = tmp_path / "a.khi"
        codes = np.arange(6, dtype=np.uint8).reshape(3, 2)
        ids = np.array([7, 8, 9])
        header = {"magic": "m", "format_version": 1, "bits": 16, "count": 3}
        save_archive(path, header, codes, ids)
        got, got_codes, got_ids = load_archive(
            path, magic="m", format_version=1, kind="T"
        )
        assert got["count"] == 3 and len(got["sha256"]) == 64
        np.testing.assert_array_equal(got_codes, codes)
        np.testing.assert_array_equal(got_ids, ids)
        with pytest.raises(ValueError, match="header field 'extra'"):
            load_archive(path, magic="m", format_version=1, kind="T", fields=("extra",))

    def test_rows_beyond_count_and_a_flipped_byte(self, tmp_path):
        path = tmp_path / "b.khi"
        codes = np.zeros((5, 1), np.uint8)
        header = {"magic": "m", "format_version": 1, "bits": 8, "count": 3, "n": 2}
        save_archive(path, header, codes, np.arange(5))

        def rows(h):
            return h["count"] + h["n"]

        _, got, _ = load_archive(path, magic="m", format_version=1, kind="T", rows=rows)
        assert got.shape == (5, 1)
        with pytest.raises(ValueError, match="header says uint8 \\(3, 1\\)"):
            load_archive(path, magic="m", format_version=1, kind="T")
        data = bytearray(path.read_bytes())
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("codes.npy")
        h = info.header_offset  # zip local header: name and extra lengths at 26, 28
        name_len = int.from_bytes(data[h + 26 : h + 28], "little")
        extra_len = int.from_bytes(data[h + 28 : h + 30], "little")
        start = h + 30 + name_len + extra_len  # the .npy member (version 1.0)
        npy_header = int.from_bytes(data[start + 8 : start + 10], "little")
        data[start + 10 + npy_header] ^= 1  # the first code's byte
        path.write_bytes(bytes(data))
        with pytest.raises(ValueError, match="Bad CRC-32 for file 'codes.npy'"):
            load_archive(path, magic="m", format_version=1, kind="T", rows=rows)

    def test_checksum_of_the_data(self, tmp_path):
        path = tmp_path / "c.khi"
        header = {"magic": "m", "format_version": 1, "bits": 8, "count": 1}
        header["sha256"] = "0" * 64  # not sha256(codes bytes + ids bytes)
        with open(path, "wb") as file:  # a path would get ".npz" appended
            np.savez(
                file,
                header=np.frombuffer(json.dumps(header).encode(), np.uint8),
                codes=np.zeros((1, 1), np.uint8),
                ids=np.zeros(1, "<i8"),
            )
        with pytest.raises(ValueError, match="checksum mismatch"):
            load_archive(path, magic="m", format_version=1, kind="T")
