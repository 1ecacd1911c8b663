"""TFRecord framing and ``tf.train.Example`` parsing without TensorFlow (used by ``converters.rlds``).

A TFRecord file is a sequence of records::

    uint64 length (little endian) | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)

``scan_records`` walks the 12-byte headers only (it seeks over each payload), so finding every record's
byte offset in a multi-GB shard costs one small read per record. ``read_record`` seeks straight to an
offset and verifies both CRCs.

``parse_example`` is a minimal protobuf wire-format parser of Example / Features / Feature / BytesList /
FloatList / Int64List. We parse by hand rather than through the ``tfrecord`` package because that
package returns bytes features as fixed-width numpy ``S`` arrays, which silently drop trailing NUL
bytes: harmless for JPEG, corrupting for raw tensors serialized as bytes (a float32 0.0 ends in NULs).
Here bytes values are returned exactly as stored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

HEADER = 12  # uint64 length + uint32 length crc
FOOTER = 4  # uint32 data crc
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C: rotate right by 15 and add a constant."""
    import crc32c

    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class RecordError(Exception):
    """A record cannot be read: bad CRC or truncated file. ``reason`` says which."""


@dataclass(frozen=True)
class RecordSpan:
    """Where record ``index`` lives: ``offset`` of its header, ``length`` of its payload, or ``error``
    when the header itself is bad (then later records of the file cannot be located)."""

    index: int
    offset: int
    length: int
    error: str | None = None


def scan_records(f, file_size: int) -> list[RecordSpan]:
    """Offsets of every record of an open binary file, reading headers only.

    A header whose length CRC fails, or that runs past the end of the file, yields a final span with
    ``error`` set: the records after it cannot be located, the records before it are unaffected.
    """
    spans: list[RecordSpan] = []
    offset = 0
    while offset < file_size:
        index = len(spans)
        f.seek(offset)
        header = f.read(HEADER)
        if len(header) < HEADER:
            spans.append(RecordSpan(index, offset, 0, f"truncated shard: record {index} header at byte {offset} "
                                                        f"has {len(header)} of {HEADER} bytes"))
            break
        length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
        if masked_crc32c(length_bytes) != length_crc:
            spans.append(RecordSpan(index, offset, 0, f"bad length CRC in record {index} at byte {offset}; "
                                                        "the rest of the shard cannot be located"))
            break
        length = struct.unpack("<Q", length_bytes)[0]
        end = offset + HEADER + length + FOOTER
        if end > file_size:
            spans.append(RecordSpan(index, offset, length, f"truncated shard: record {index} at byte {offset} "
                                                             f"needs {end} bytes, file has {file_size}"))
            break
        spans.append(RecordSpan(index, offset, length))
        offset = end
    return spans


def read_record(f, offset: int, index: int, file_size: int) -> bytes:
    """The payload of the record at ``offset``, both CRCs verified; RecordError otherwise.

    The length a header declares is checked against ``file_size`` before anything is allocated: a
    forged header (its CRC is easy to forge too) asking for terabytes fails at once."""
    f.seek(offset)
    header = f.read(HEADER)
    if len(header) < HEADER:
        raise RecordError(f"truncated shard: record {index} header at byte {offset} is cut short")
    if masked_crc32c(header[:8]) != struct.unpack("<I", header[8:])[0]:
        raise RecordError(f"bad length CRC in record {index} at byte {offset}")
    length = struct.unpack("<Q", header[:8])[0]
    if offset + HEADER + length + FOOTER > file_size:
        raise RecordError(f"truncated shard: record {index} at byte {offset} declares {length} bytes, "
                          f"past the end of the {file_size}-byte file")
    body = f.read(length + FOOTER)
    if len(body) < length + FOOTER:
        raise RecordError(f"truncated shard: record {index} at byte {offset} has {len(body)} of "
                          f"{length + FOOTER} payload bytes")
    data = body[:length]
    if masked_crc32c(data) != struct.unpack("<I", body[length:])[0]:
        raise RecordError(f"bad data CRC in record {index} at byte {offset} ({length} bytes)")
    return data


# --- protobuf wire format -------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def _fields(buf: bytes, start: int, end: int):
    """Yield (field number, wire type, value) over buf[start:end]; LEN values as (start, end) spans."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 2:
            n, pos = _varint(buf, pos)
            val = (pos, pos + n)
            pos += n
        elif wt == 5:
            val = (pos, pos + 4)
            pos += 4
        elif wt == 1:
            val = (pos, pos + 8)
            pos += 8
        else:
            raise ValueError(f"unsupported wire type {wt}")
        if pos > end:
            raise ValueError("field runs past the end of its message")
        yield num, wt, val


def _messages(buf: bytes, start: int, end: int):
    """Yield (field number, (start, end)) of the length-delimited fields Example's nesting is made of;
    any other wire type there is a malformed record, not a value to unpack."""
    for num, wt, val in _fields(buf, start, end):
        if wt != 2:
            raise ValueError(f"field {num} has wire type {wt} where a length-delimited message belongs")
        yield num, val


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= (1 << 63) else v


def _int64_list(buf: bytes, start: int, end: int) -> np.ndarray:
    out: list[int] = []
    for num, wt, val in _fields(buf, start, end):
        if num != 1:
            continue
        if wt == 0:
            out.append(_signed64(val))
        else:  # packed
            s, e = val
            chunk = buf[s:e]
            if all(b < 0x80 for b in chunk):  # every value a single byte: the common case (flags, small ints)
                out.extend(chunk)
                continue
            p = s
            while p < e:
                v, p = _varint(buf, p)
                out.append(_signed64(v))
    return np.asarray(out, dtype=np.int64)


def _float_list(buf: bytes, start: int, end: int) -> np.ndarray:
    parts: list[bytes] = []
    for num, wt, val in _fields(buf, start, end):
        if num == 1:
            parts.append(buf[val[0]:val[1]])  # packed (wt 2) or a single fixed32 (wt 5): same bytes
    return np.frombuffer(b"".join(parts), dtype="<f4").copy()


def _bytes_list(buf: bytes, start: int, end: int) -> list[bytes]:
    return [buf[v[0]:v[1]] for num, wt, v in _fields(buf, start, end) if num == 1]


def parse_example(buf: bytes) -> dict[str, tuple[str, object]]:
    """A serialized ``tf.train.Example`` -> {key: (kind, values)}, kind in ``bytes`` (list of bytes,
    exact), ``float`` (float32 array), ``int64`` (int64 array)."""
    out: dict[str, tuple[str, object]] = {}
    for num, (fs, fe) in _messages(buf, 0, len(buf)):
        if num != 1:  # Example.features
            continue
        for fnum, (es, ee) in _messages(buf, fs, fe):
            if fnum != 1:  # Features.feature map entry
                continue
            key, value = None, ("bytes", [])
            for enum_, (vs, ve) in _messages(buf, es, ee):
                if enum_ == 1:
                    key = buf[vs:ve].decode("utf-8")
                elif enum_ == 2:
                    for knum, (ks, ke) in _messages(buf, vs, ve):
                        if knum == 1:
                            value = ("bytes", _bytes_list(buf, ks, ke))
                        elif knum == 2:
                            value = ("float", _float_list(buf, ks, ke))
                        elif knum == 3:
                            value = ("int64", _int64_list(buf, ks, ke))
            if key is not None:
                out[key] = value
    return out
