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
    view = memoryview(data)
    try:
        offset = 128
        while offset < len(data):
            kind, size = _TAG.unpack_from(data, offset)
            if kind == _MI_COMPRESSED:
                if offset + 8 + size > len(data):
                    raise _NotPlain  # truncated
                element, at = zlib.decompress(view[offset + 8 : offset + 8 + size]), 0
                offset += 8 + size
            else:
                element, at = data, offset
                offset += 8 + size + (-size) % 8
                if kind >> 16 or offset > len(data) + (-size) % 8:
                    raise _NotPlain  # a small data element at the top level, or truncated
            name, array = _matrix(element, at)
            variables[name] = array
    except (_NotPlain, zlib.error, struct.error, ValueError, UnicodeDecodeError):
        return None
    return variables


_TAG = struct.Struct("<II")
_DIMS2 = struct.Struct("<2i")  # a matrix's dimensions: two, for every 2-D matrix
_DTYPES = {kind: np.dtype(storage) for kind, storage in _STORAGE.items()}
_MATRIX_HEAD = struct.Struct("<8I")  # element tag, array flags tag and words, dimensions tag


def _element(data: bytes, offset: int) -> tuple[int, int, int, int]:
    """(type, offset of its data, its size, offset of the next element) of the data element at `offset` of
    a matrix's body."""
    kind, size = _TAG.unpack_from(data, offset)
    if kind >> 16:  # small data element: the size in the upper half, the data in the tag's last 4 bytes
        kind, size = kind & 0xFFFF, kind >> 16
        if size > 4:
            raise _NotPlain
        return kind, offset + 4, size, offset + 8
    return kind, offset + 8, size, offset + 8 + size + (-size) % 8


def _matrix(data: bytes, at: int) -> tuple[str, np.ndarray]:
    """(name, array) of the `miMATRIX` element at `at` holding a real numeric matrix: array flags (an 8-byte
    `miUINT32`), dimensions (`miINT32`), name, real part."""
    kind, size, flags_kind, flags_size, flag_word, _, dims_kind, dims_size = _MATRIX_HEAD.unpack_from(data, at)
    end = at + 8 + size
    if kind != _MI_MATRIX or end > len(data) or (flags_kind, flags_size, dims_kind) != (6, 8, 5):
        raise _NotPlain
    if flag_word & _COMPLEX_FLAG or (flag_word & 0xFF) not in _NUMERIC_CLASSES:
        raise _NotPlain
    shape = (_DIMS2 if dims_size == 8 else struct.Struct(f"<{dims_size // 4}i")).unpack_from(data, at + 32)
    _, name_at, name_size, offset = _element(data, at + 32 + dims_size + (-dims_size) % 8)
    kind, real_at, real_size, offset = _element(data, offset)
    dtype = _DTYPES.get(kind)
    if dtype is None or real_at + real_size > end or offset < end:  # another type, or more than a real part
        raise _NotPlain
    if real_size != dtype.itemsize * math.prod(shape) or min(shape) < 0:
        raise _NotPlain
    values = np.ndarray(shape, dtype, buffer=data, offset=real_at, order="F")
    return data[name_at : name_at + name_size].decode("ascii"), values.copy()
