"""Tests of keras_hash.recipes.precision: the dtype policy chosen per machine."""

import pytest

from keras_hash.recipes import precision


@pytest.mark.parametrize(
    "capabilities, expected",
    [
        ([(9, 0)], "mixed_bfloat16"),
        ([(8, 0), (8, 6)], "mixed_bfloat16"),
        ([(7, 5)], "mixed_float16"),
        ([(8, 0), (7, 0)], "mixed_float16"),  # the oldest GPU decides
        ([(6, 1)], "float32"),
    ],
)
def test_gpus_decide_when_present(capabilities, expected):
    assert precision.recommended_policy(capabilities, flags={"amx_bf16"}) == expected


def test_cpu_needs_amx_for_bfloat16():
    assert precision.recommended_policy([], flags={"avx512_bf16"}) == "float32"
    assert precision.recommended_policy([], flags={"amx_bf16", "amx_tile"}) == (
        "mixed_bfloat16"
    )


def test_cpu_flags_parses_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nflags\t\t: fpu sse2 amx_bf16 avx512f\n\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    assert precision.cpu_flags(str(info)) == {"fpu", "sse2", "amx_bf16", "avx512f"}
    assert precision.cpu_flags(str(tmp_path / "missing")) == set()


def test_default_arguments_return_a_known_policy():
    assert precision.recommended_policy() in precision.POLICIES
