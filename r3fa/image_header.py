"""Width and height of an encoded image, read from its header bytes without decoding it.

A decompression bomb (a 1 MB PNG that declares 32000x32000 pixels, a JPEG that declares 65000x65000) costs
gigabytes once a decoder is asked for it. `r3fa.io.read_image` asks `image_size` first and refuses an image
above its pixel limit before OpenCV sees a byte. The formats are those OpenCV decodes for the project: JPEG
(the first SOF marker), PNG (IHDR), BMP (DIB header), PNM (P1-P6 text header), TIFF (first IFD) and WebP
(VP8 / VP8L / VP8X). Anything else, and any header that is cut short, gives `None`: the caller refuses it.
"""

from __future__ import annotations

import re
import struct

JPEG_START = b"\xff\xd8"  # SOI: every JPEG stream begins with it
# SOF0-SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset([0x01, *range(0xD0, 0xD9)])  # TEM, RST0-7, SOI: markers without a length field
_PNM = re.compile(rb"P[1-6](?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)\s")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by the header of encoded image bytes, or None for an unknown format or a
    header that is cut short (or a JPEG whose first frame declares no height)."""
    for parse in (_jpeg, _png, _bmp, _pnm, _tiff, _webp):
        try:
            size = parse(data)
        except (struct.error, IndexError, ValueError):
            return None
        if size is not None:
            return size if size[0] > 0 and size[1] > 0 else None
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    if data[:2] != JPEG_START:
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("JPEG marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or scan data before any frame header
            raise ValueError("no frame header")
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    raise ValueError("cut short")


def _png(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    if data[12:16] != b"IHDR":
        raise ValueError("IHDR expected")
    return struct.unpack(">II", data[16:24])


def _bmp(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"BM":
        return None
    if struct.unpack("<I", data[14:18])[0] == 12:  # BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return width, abs(height)  # a negative height is a top-down bitmap


def _pnm(data: bytes) -> tuple[int, int] | None:
    if not re.match(rb"P[1-6]\s", data[:3]):
        return None
    match = _PNM.match(data[:1024])
    if match is None:
        raise ValueError("PNM header")
    return int(match[1]), int(match[2])


def _tiff(data: bytes) -> tuple[int, int] | None:
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    (entries,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    size: dict[int, int] = {}
    for i in range(entries):
        tag, kind, _, value = struct.unpack(order + "HHI4s", data[ifd + 2 + 12 * i : ifd + 14 + 12 * i])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            size[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value[: 2 if kind == 3 else 4])[0]
    if len(size) != 2:
        raise ValueError("TIFF without width and height")
    return size[256], size[257]


def _webp(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise ValueError("unknown WebP chunk")
