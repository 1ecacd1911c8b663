"""CRC32 arithmetic for the checksums the writer records (:mod:`wamdata.format.writer`).

Python's ``zlib`` has ``crc32`` but not zlib's ``crc32_combine``; with it, an episode's checksum over
all its members follows from the members' own checksums and sizes, without a second pass over bytes.
"""

from __future__ import annotations

import functools


def _times(mat: tuple[int, ...], vec: int) -> int:
    """A GF(2) matrix (its 32 columns as ints) times a 32-bit vector."""
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec, i = vec >> 1, i + 1
    return out


@functools.cache
def _zeros_operators() -> tuple[tuple[int, ...], ...]:
    """Matrices that advance a CRC32 register over 2**k zero bytes, k < 48 (computed once, ~8 ms)."""
    op = (0xEDB88320, *(1 << n for n in range(31)))   # one zero bit
    for _ in range(3):                                # -> one zero byte
        op = tuple(_times(op, c) for c in op)
    ops = [op]
    for _ in range(47):
        ops.append(tuple(_times(ops[-1], c) for c in ops[-1]))
    return tuple(ops)


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """``zlib.crc32(a + b)`` from ``crc1 = zlib.crc32(a)``, ``crc2 = zlib.crc32(b)`` and ``len(b)``
    (zlib's crc32_combine): the register after ``a`` is advanced over ``len(b)`` zero bytes, one
    power of two at a time, and ``b``'s own checksum added."""
    for op in _zeros_operators():
        if not len2:
            break
        if len2 & 1:
            crc1 = _times(op, crc1)
        len2 >>= 1
    return crc1 ^ crc2
