"""A small reader of MAT-file v5 numeric matrices, for the annotation a build reads once per source.

`scipy.io.loadmat` spends about 0.35 ms in a build on a 300W-LP / AFLW2000-3D `.mat` (nine small
zlib-compressed matrices), more than the warp of a crop; most of it is generic machinery. This reader takes
the common case only: a little-endian v5 file whose every variable is a real numeric matrix, compressed or
not. Anything else (a struct, cell, char, sparse or complex variable, a big-endian or v7.3 file, a damaged
or truncated element) gives None and the caller reads the file with scipy, so every unusual file gets
scipy's reading and scipy's error. Arrays come back as scipy's defaults give them (`mat_dtype=False`): the
stored numeric type in the stored shape (`tests/test_mat5.py` compares both readers on every `.mat` of the
data folder).

Format: MathWorks' "MAT-File Format" (a data element is an 8-byte tag, type and size, then its data padded
to 8 bytes, or a "small data element" of at most 4 bytes inside the tag; a matrix is an `miMATRIX` element of
array flags, dimensions, name and real part; `miCOMPRESSED` is a zlib stream holding one element).
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

_MI_MATRIX, _MI_COMPRESSED = 14, 15
_STORAGE = {1: "i1", 2: "u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<f4", 9: "<f8", 12: "<i8", 13: "<u8"}
_NUMERIC_CLASSES = range(6, 16)  # mxDOUBLE_CLASS .. mxUINT64_CLASS
_COMPLEX_FLAG = 0x800


class _NotPlain(Exception):
    """Not a file this reader takes; scipy reads it."""


def read_mat5(data: bytes) -> dict[str, np.ndarray] | None:
    """The variables of a MAT v5 file of real numeric matrices, or None for any other file (read it with scipy)."""
    if len(data) < 128 or data[124:128] != b"\x00\x01IM":  # version 0x0100, little-endian
        return None
    variables: dict[str, np.ndarray] = {}
    try:
        offset = 128
        while offset < len(data):
            kind, body, offset = _element(data, offset)
            if kind == _MI_COMPRESSED:
                kind, body, _ = _element(zlib.decompress(body), 0)
            if kind != _MI_MATRIX:
                raise _NotPlain
            name, array = _matrix(body)
            variables[name] = array
    except (_NotPlain, zlib.error, struct.error, ValueError, UnicodeDecodeError):
        return None
    return variables


def _element(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(type, data, offset of the next element) of the data element at `offset`."""
    kind, size = struct.unpack_from("<II", data, offset)
    if kind >> 16:  # small data element: the size in the upper half, the data in the tag's last 4 bytes
        kind, size = kind & 0xFFFF, kind >> 16
        if size > 4:
            raise _NotPlain
        return kind, data[offset + 4 : offset + 4 + size], offset + 8
    end = offset + 8 + size
    if end > len(data):
        raise _NotPlain  # truncated
    return kind, data[offset + 8 : end], end if kind == _MI_COMPRESSED else end + (-size) % 8


def _matrix(body: bytes) -> tuple[str, np.ndarray]:
    """(name, array) of an `miMATRIX` element holding a real numeric matrix: array flags (an 8-byte
    `miUINT32`), dimensions (`miINT32`), name, real part."""
    flags_kind, flags_size, flag_word, _, dims_kind, dims_size = struct.unpack_from("<6I", body)
    if (flags_kind, flags_size, dims_kind) != (6, 8, 5) or flag_word & _COMPLEX_FLAG:
        raise _NotPlain
    if (flag_word & 0xFF) not in _NUMERIC_CLASSES:
        raise _NotPlain
    shape = struct.unpack_from(f"<{dims_size // 4}i", body, 24)
    _, name, offset = _element(body, 24 + dims_size + (-dims_size) % 8)
    kind, real, offset = _element(body, offset)
    if kind not in _STORAGE or offset < len(body):  # another storage type, or more than a real part
        raise _NotPlain
    values = np.frombuffer(real, _STORAGE[kind])
    if values.size != math.prod(shape):
        raise _NotPlain
    return name.decode("ascii"), values.reshape(shape, order="F").copy()
