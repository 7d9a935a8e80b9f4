"""Binary codes: binarize, pack, unpack and Hamming distance.

This module is the single owner of the bit order. Everything else in
keras_hash (models, exporters, the index, the metrics) calls it.

Bit order: bit ``i`` of a K-bit code is stored in byte ``i // 8`` under the
mask ``0x80 >> (i % 8)``, exactly as ``numpy.packbits(bits, axis=-1)`` lays it
out. Bit 1 means +1, i.e. a real-valued output ``z >= 0`` (``sign(0) = +1``,
so no code ever holds a zero "bit"). K must be a multiple of 8 to be packed.

The Hamming kernel (:func:`hamming_distances`, streamed as
:func:`hamming_blocks`) is the one distance loop of the package: the index
and the metrics call it. Distance = ``popcount(a XOR b)`` = ``(K - <a, b>) / 2``
for ±1 codes, computed over 64-bit words laid out as planes ``[words, N]``
(:func:`word_planes`), tiled for cache, and kept in the narrowest dtype that
holds ``0..K`` (:func:`distance_dtype`: uint8 below 256 bits, uint16 below
65,536, uint32 beyond).

Example:

```python
import numpy as np
import keras_hash

z = np.array([[0.3, -1.2, 0.0, -0.1, 2.0, 1.0, -3.0, 0.5]])
packed = keras_hash.pack_codes(z, "logits")  # array([[0b10101101]], dtype=uint8)
keras_hash.unpack_codes(packed, bits=8)    # [[1, -1, 1, -1, 1, 1, -1, 1]]
keras_hash.hamming_distance(packed, packed)  # [[0]]
```
"""

from __future__ import annotations

import numpy as np

#: Weight of each bit inside its byte, most significant first (``0x80 >> i``).
BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def check_bits(bits, *, packed: bool = True) -> int:
    """Validates a code length and returns it as an int.

    Args:
        bits: the number of bits K.
        packed: if True, K must also be a multiple of 8.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int, got {bits!r}")
    if bits <= 0:
        raise ValueError(f"bits must be positive, got {bits}")
    if packed and bits % 8:
        raise ValueError(
            f"bits must be a multiple of 8 to pack codes into bytes, got {bits}"
        )
    return int(bits)


#: The conventions :func:`pack_codes` reads, with the threshold each uses.
CONVENTIONS = ("signs", "bits", "logits", "probabilities")
_THRESHOLDS = {"logits": 0.0, "probabilities": 0.5}


def binarize(x, convention: str, *, threshold: float | None = None) -> np.ndarray:
    """Turns codes into {0, 1} bits (uint8, same shape) by a stated convention.

    - ``"signs"``: ``±1`` codes; every value must be -1 or +1.
    - ``"bits"``: ``{0, 1}`` bits (bool or numeric); every value 0 or 1.
    - ``"logits"``: real values (logits, pre-activations ``z``, ``tanh``
      outputs); bit 1 where ``x >= threshold`` (default 0, so
      ``sign(0) = +1``). Needs a signed dtype.
    - ``"probabilities"``: values in ``[0, 1]``; bit 1 where
      ``x >= threshold`` (default 0.5).

    Nothing is guessed from the values: a value the convention cannot read
    (a 0 among signs, a 0.5 among bits, a negative probability, NaN or
    infinity) raises ``ValueError`` naming it.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    x = np.asarray(x)
    if x.dtype != bool and not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"codes must be numeric or bool, got dtype {x.dtype}")
    if np.iscomplexobj(x):
        raise TypeError(f"codes must be real, got dtype {x.dtype}")
    if threshold is not None and convention not in _THRESHOLDS:
        raise ValueError(
            f"threshold applies to 'logits' and 'probabilities', not {convention!r}"
        )
    if convention == "bits":
        _check_values(x, (0, 1), convention)
        return x.astype(np.uint8)
    if x.dtype == bool or np.issubdtype(x.dtype, np.unsignedinteger):
        raise TypeError(
            f"{x.dtype} codes hold no sign: pass 0/1 bits with "
            f"convention='bits', not {convention!r}"
        )
    if convention == "signs":
        _check_values(x, (-1, 1), convention)
        return (x > 0).astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        bad = x[~np.isfinite(x)][0]
        raise ValueError(f"codes contain non-finite values ({bad}): NaN or inf")
    if threshold is None:
        threshold = _THRESHOLDS[convention]
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    if convention == "probabilities":
        outside = (x < 0) | (x > 1)
        if np.any(outside):
            raise ValueError(
                f"probabilities must lie in [0, 1], found {x[outside][0]}; "
                "pass real-valued outputs with convention='logits'"
            )
    return (x >= threshold).astype(np.uint8)


def _check_values(x: np.ndarray, allowed, convention: str) -> None:
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise ValueError(f"{convention} contain NaN or infinite values")
    bad = ~np.isin(x, allowed)
    if np.any(bad):
        shown = ", ".join(str(v) for v in np.unique(x[bad])[:4])
        raise ValueError(
            f"convention={convention!r} reads only {allowed[0]} and {allowed[1]}, "
            f"found {shown}; real-valued outputs take convention='logits' "
            "(x >= 0 is bit 1), probabilities convention='probabilities'"
        )


def pack_codes(
    x, convention: str, *, threshold: float | None = None, bits: int | None = None
) -> np.ndarray:
    """Packs codes ``[N, K]`` into bytes ``[N, K // 8]`` (uint8).

    The caller says how to read ``x`` (:func:`binarize`): ``"signs"``
    (``±1``), ``"bits"`` (0/1), ``"logits"`` (real values, ``x >= threshold``
    is bit 1, threshold 0 by default so ``sign(0) = +1``) or
    ``"probabilities"`` (in ``[0, 1]``, ``p >= threshold``, 0.5 by default).

    ```python
    pack_codes(model.hash_layer.logits(x), "logits")
    pack_codes(np.array([[1, -1, 1, 1, -1, -1, 1, 1]]), "signs")  # [[0b10110011]]
    ```

    Args:
        x: codes ``[N, K]``, K a multiple of 8.
        convention: ``"signs"``, ``"bits"``, ``"logits"`` or
            ``"probabilities"``.
        threshold: the cut of ``"logits"`` and ``"probabilities"``.
        bits: the expected K, checked against ``x.shape[1]`` if given.

    Returns:
        uint8 array ``[N, K // 8]`` in the bit order of ``numpy.packbits``.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"codes must have shape [N, bits], got shape {x.shape}")
    check_bits(x.shape[1])
    if bits is not None and x.shape[1] != check_bits(bits):
        raise ValueError(f"codes have {x.shape[1]} bits per row, expected {bits}")
    return np.packbits(binarize(x, convention, threshold=threshold), axis=-1)


def unpack_codes(packed, bits: int) -> np.ndarray:
    """Unpacks ``[N, bits // 8]`` bytes into ``±1`` codes ``[N, bits]`` (int8)."""
    packed = check_packed(packed, bits=bits)
    bits01 = np.unpackbits(packed, axis=-1, count=bits)
    return (bits01.astype(np.int8) * 2 - 1).astype(np.int8)


def check_packed(codes, *, bits: int | None = None, name: str = "codes"):
    """Validates packed codes: a 2-D uint8 array, ``bits // 8`` bytes wide.

    Returns the array (C-contiguous) so callers can write
    ``codes = check_packed(codes, bits=self.bits)``.
    """
    if not isinstance(codes, np.ndarray):
        codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise TypeError(
            f"{name} must be packed uint8 codes (see keras_hash.pack_codes), "
            f"got dtype {codes.dtype}"
        )
    if codes.ndim != 2:
        raise ValueError(
            f"{name} must have shape [N, bits // 8], got shape {codes.shape}"
        )
    if bits is not None:
        check_bits(bits)
        if codes.shape[1] != bits // 8:
            raise ValueError(
                f"{name} are {codes.shape[1]} bytes wide but {bits}-bit codes "
                f"take {bits // 8} bytes"
            )
    return np.ascontiguousarray(codes)


def check_codes(codes, *, bits: int, name: str = "codes", assume_packed=False):
    """Validates packed codes whose width the caller states: one clear rule.

    ``codes`` must be uint8 ``[N, bits // 8]`` (:func:`check_packed`). And
    since an unpacked array cast to uint8 also fits that description when
    ``bits`` is misstated, an array whose every byte is 0 or 1, or every byte
    1 or 255 (0/1 bits and ``±1`` signs as uint8), with at least one byte
    equal to 1, is refused unless ``assume_packed=True`` says its bytes
    really are packed codes. (Among random packed codes each byte is 0 or 1
    with probability 1/128; an all-0 or all-255 array, the codes of a
    collapsed model, passes.)

    ```python
    check_codes(np.packbits(bits01, axis=1), bits=64)   # fine
    check_codes(bits01.astype(np.uint8), bits=512)       # ValueError: unpacked
    ```

    Returns the array (C-contiguous).
    """
    codes = check_packed(codes, bits=check_bits(bits), name=name)
    if not assume_packed and codes.size and _looks_unpacked(codes):
        raise ValueError(
            f"every byte of {name} is 0 or 1 (or 1 or 255): these look like "
            f"unpacked bits or ±1 signs [N, K], not packed {bits}-bit codes. "
            "Pack them with keras_hash.pack_codes(x, convention), or pass "
            "assume_packed=True if these bytes really are packed codes"
        )
    return codes


def _looks_unpacked(codes: np.ndarray) -> bool:
    has_one = bool(np.any(codes == 1))
    if not has_one:
        return False
    return bool(np.all(codes <= 1) or np.all((codes == 1) | (codes == 255)))


def as_words(codes: np.ndarray) -> np.ndarray:
    """Views packed codes ``[N, B]`` as the widest unsigned words that fit.

    Popcount over 64-bit words is ~8x fewer operations than over bytes. The
    view changes no bit, so Hamming distances are unchanged.
    """
    codes = np.ascontiguousarray(codes)
    width = codes.shape[1]
    for dtype in (np.uint64, np.uint32, np.uint16):
        size = np.dtype(dtype).itemsize
        if width % size == 0:
            return codes.view(dtype)
    return codes


def distance_dtype(bits: int) -> np.dtype:
    """The narrowest unsigned dtype that holds Hamming distances ``0..bits``.

    uint8 below 256 bits, uint16 below 65,536 bits, uint32 beyond. Every
    kernel caller keeps distances in this dtype (so ``bits + 1``, used as
    "beyond any distance", also fits).
    """
    if bits < 1 << 8:
        return np.dtype(np.uint8)
    if bits < 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def word_planes(codes: np.ndarray) -> np.ndarray:
    """Packed codes ``[N, B]`` as word planes ``[words, N]`` (C-contiguous).

    The layout of the Hamming kernel: plane ``w`` holds word ``w`` of every
    code, so one XOR broadcasts a query word against a run of database words.
    """
    return np.ascontiguousarray(as_words(codes).T)


# Tile of the Hamming kernel: 64 queries x 4096 database words of 8 bytes
# (2 MiB of XOR) stays in L2 cache; the fastest tile measured on 64 and
# 256-bit codes.
QUERY_TILE = 64
DATABASE_TILE = 4096


def _tile(query_planes, planes, out, xor, count) -> None:
    """``out = popcount(query XOR database)`` summed over word planes."""
    for w in range(planes.shape[0]):
        np.bitwise_xor(query_planes[w, :, None], planes[w, None, :], out=xor)
        if w == 0:
            np.bitwise_count(xor, out=out, casting="unsafe")
        else:
            np.add(out, np.bitwise_count(xor, out=count), out=out, casting="unsafe")


def hamming_blocks(query_planes, planes, dtype, block: int = DATABASE_TILE):
    """Yields ``(start, distances [q, width])`` over blocks of the database.

    The Hamming kernel, streamed: ``distances[i, j]`` is the distance from
    query ``i`` to database item ``start + j``. Both arguments are word
    planes (:func:`word_planes`); ``dtype`` is :func:`distance_dtype` of the
    code length. The yielded array is a buffer reused by the next block:
    copy it to keep it. Keep ``q`` small (:data:`QUERY_TILE`) for speed.
    """
    n = planes.shape[1]
    shape = (query_planes.shape[1], min(block, n))
    xor = np.empty(shape, planes.dtype)
    dist = np.empty(shape, dtype)
    count = np.empty(shape, np.uint8)
    for j0 in range(0, n, block):
        w = min(block, n - j0)
        d = dist[:, :w]
        _tile(query_planes, planes[:, j0 : j0 + w], d, xor[:, :w], count[:, :w])
        yield j0, d


def hamming_distances(query_planes, planes, dtype) -> np.ndarray:
    """The Hamming kernel: distances ``[q, N]`` between word planes.

    Tiled over queries and database (:data:`QUERY_TILE` x
    :data:`DATABASE_TILE`) so that each XOR stays in cache. ``dtype`` is
    :func:`distance_dtype` of the code length; popcounts of single words
    (at most 64) are summed in it, so it never overflows.
    """
    q, n = query_planes.shape[1], planes.shape[1]
    out = np.empty((q, n), dtype)
    shape = (min(QUERY_TILE, q), min(DATABASE_TILE, n))
    xor = np.empty(shape, planes.dtype)
    count = np.empty(shape, np.uint8)
    for i0 in range(0, q, QUERY_TILE):
        qp = query_planes[:, i0 : i0 + QUERY_TILE]
        h = qp.shape[1]
        for j0 in range(0, n, DATABASE_TILE):
            w = min(DATABASE_TILE, n - j0)
            tile = out[i0 : i0 + h, j0 : j0 + w]
            _tile(qp, planes[:, j0 : j0 + w], tile, xor[:h, :w], count[:h, :w])
    return out


def hamming_distance(a, b) -> np.ndarray:
    """Hamming distance matrix between packed codes.

    Args:
        a: uint8 ``[N, B]`` packed codes.
        b: uint8 ``[M, B]`` packed codes, same width.

    Returns:
        int32 ``[N, M]`` with ``popcount(a[i] XOR b[j])``.
    """
    a = check_packed(a, name="a")
    b = check_packed(b, name="b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"code widths disagree: {a.shape[1]} bytes vs {b.shape[1]} bytes"
        )
    dtype = distance_dtype(a.shape[1] * 8)
    return hamming_distances(word_planes(a), word_planes(b), dtype).astype(np.int32)


def pack_codes_tensor(z):
    """Packs real-valued outputs ``[N, K]`` to uint8 ``[N, K // 8]`` in-graph.

    Uses only comparison, cast, multiply and sum (TFLite builtins), never
    shifts, bitwise ops or popcount, which would need the Flex runtime.
    ``z >= 0`` is bit 1, in the bit order of :func:`pack_codes`. The
    arithmetic is int32: full-int8 TFLite conversion quantizes float tensors,
    and a float byte sum (0 to 255) quantized to int8 would lose bits.
    """
    from keras import ops

    bits = z.shape[-1]
    check_bits(bits)
    on = ops.cast(ops.greater_equal(z, 0), "int32")
    grouped = ops.reshape(on, (-1, bits // 8, 8))
    weights = ops.convert_to_tensor(BIT_WEIGHTS, dtype="int32")
    return ops.cast(ops.sum(grouped * weights, axis=-1), "uint8")
