"""Safe reading of images and 300W-LP-format annotations.

Every failure becomes a `BadInputError` carrying the path, a short reason (the exact wording is part of
the rejection records) and the name of the exception class behind it, so callers can set the sample aside
and go on. Reasons: `unreadable image (...)`, `missing image`, `missing image (dangling symlink)`,
`image too large ...` (refused from its header, never decoded: `MAX_IMAGE_PIXELS`), `truncated or corrupt
.mat`, `missing field <name>`, `bad shape <name> <shape>`, `bad field type <name>`, `non-finite values in <name>`.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from r3fa.image_header import JPEG_START, image_size
from r3fa.mat5 import read_mat5

MAX_IMAGE_PIXELS = 40_000_000  # default limit of `read_image`: 200 times a 450x450 300W-LP image


def error_name(err: BaseException) -> str:
    """The class name of an exception as a reader would look it up: `ValueError`, `cv2.error`,
    `numpy.linalg.LinAlgError` (the module is named unless it is a builtin)."""
    cls = type(err)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class BadInputError(Exception):
    """An input file that cannot be used, with its path, the reason and the exception class behind it.

    Attributes:
        path: the file at fault.
        reason: short, stable wording (see the module docstring).
        error: `error_name` of the exception that made the input unusable, "BadInputError" when the reader
            itself refused it.
    """

    def __init__(self, path: str | Path, reason: str, error: str = "BadInputError"):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.error = error


# what `Path.is_file` reads as "no file here": nothing, a dangling symlink, a symlink loop, a socket
_NOT_A_FILE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF, errno.ENXIO})


def read_regular_file(path: str | Path) -> bytes | None:
    """The bytes of the regular file at `path`, or None where there is none (`Path.is_file` is False: nothing,
    a dangling symlink, a folder, a FIFO, a device). Opened without blocking, so a FIFO never stalls a build,
    and checked on the open file: one path lookup, where `is_file` then `read_bytes` took two. Other errors
    (e.g. `PermissionError`) are raised."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in _NOT_A_FILE:
            return None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        chunks = []
        while chunk := os.read(fd, info.st_size + 1):  # one read, then the empty one at the end
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _missing(path: str | Path, what: str) -> BadInputError:
    return BadInputError(path, f"missing {what} (dangling symlink)" if os.path.islink(path) else f"missing {what}")


class ScaledImage(NamedTuple):
    """A decoded image and its step: source pixels per decoded pixel in each direction, 1 at full size and 2
    at half size, where decoded pixel (x, y) is the filtered 2x2 block of source pixels centred on
    (2x + 0.5, 2y + 0.5) (`decode_scaled`)."""

    pixels: np.ndarray
    step: int


def read_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """BGR uint8 image, as OpenCV reads it, refused from its header when it has more than `max_pixels`."""
    return read_scaled_image(path, max_pixels).pixels


def read_scaled_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS, half_size: bool = False) -> ScaledImage:
    """`read_image`, at half size where `decode_scaled` can when `half_size`."""
    try:
        data = read_regular_file(path)
    except OSError as err:
        raise BadInputError(path, f"unreadable image ({error_name(err)})", error_name(err)) from None
    if data is None:
        raise _missing(path, "image")
    return decode_scaled(data, str(path), max_pixels, half_size)


def decode_image(data: bytes, where: str = "<bytes>", max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode encoded image bytes to BGR uint8.

    The header is read first (`r3fa.image_header.image_size`): an empty file, an unknown format and an image
    of more than `max_pixels` pixels are refused without decoding (a decompression bomb never reaches OpenCV).
    """
    return decode_scaled(data, where, max_pixels).pixels


def decode_scaled(
    data: bytes, where: str = "<bytes>", max_pixels: int = MAX_IMAGE_PIXELS, half_size: bool = False
) -> ScaledImage:
    """`decode_image`; with `half_size`, a JPEG of even width and height is decoded at half its size in each
    dimension (libjpeg's scaled decoding: the same entropy decoding, a 4x4 inverse DCT per 8x8 block; about
    0.45x the time of a full decode), any other image at full size. The step says which."""
    if not data:
        raise BadInputError(where, "unreadable image (empty file)")
    size = image_size(data)
    if size is None:
        raise BadInputError(where, "unreadable image (not a JPEG, PNG, BMP, PNM, TIFF or WebP header)")
    width, height = size
    if width * height > max_pixels:
        reason = f"image too large: header declares {width}x{height} pixels > max_image_pixels {max_pixels}"
        raise BadInputError(where, f"{reason} (not decoded)")
    halve = half_size and data[:2] == JPEG_START and width % 2 == 0 and height % 2 == 0
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_2 if halve else cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise BadInputError(where, f"unreadable image ({error_name(err)})", error_name(err)) from None
    if image is None or image.size == 0:
        raise BadInputError(where, "unreadable image")
    if halve and sorted(image.shape[:2]) != sorted((width // 2, height // 2)):  # never seen: decode it whole
        return decode_scaled(data, where, max_pixels)
    return ScaledImage(image, 2 if halve else 1)


@dataclass(frozen=True)
class Annotation:
    """The fields of a 300W-LP / AFLW2000-3D `.mat` that the labels need."""

    pose_para: np.ndarray  # (7,) pitch, yaw, roll (rad), tx, ty, tz, scale
    shape_para: np.ndarray  # (199,)
    exp_para: np.ndarray  # (29,)
    pt3d_68: np.ndarray | None  # (3, 68) image frame, when present
    pt2d: np.ndarray | None  # (2, K), K = 68 in 300W-LP, 21 in AFLW2000-3D


_REQUIRED = {"Pose_Para": 7, "Shape_Para": 199, "Exp_Para": 29}


def _numeric(path: str | Path, name: str, value: object) -> np.ndarray:
    """A real float64 array of a `.mat` field, or `BadInputError("bad field type <name>")`."""
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":  # signed or unsigned integer, or floating point
        raise BadInputError(path, f"bad field type {name} ({array.dtype})")
    return array.astype(np.float64)


def read_annotation(path: str | Path) -> Annotation:
    """Read and validate a 300W-LP-format `.mat`."""
    mat = _load_mat(path, "annotation")
    fields = {}
    for name, size in _REQUIRED.items():
        if name not in mat:
            raise BadInputError(path, f"missing field {name}")
        value = _numeric(path, name, mat[name]).reshape(-1)
        if value.size < size:
            raise BadInputError(path, f"bad shape {name} {tuple(np.shape(mat[name]))}")
        fields[name] = value[:size]
    pt3d = _numeric(path, "pt3d_68", mat["pt3d_68"]) if "pt3d_68" in mat else None
    pt2d = _numeric(path, "pt2d", mat["pt2d"]) if "pt2d" in mat else None
    if pt3d is not None and pt3d.shape != (3, 68):
        raise BadInputError(path, f"bad shape pt3d_68 {pt3d.shape}")
    if pt2d is not None and (pt2d.ndim != 2 or pt2d.shape[0] != 2):
        raise BadInputError(path, f"bad shape pt2d {pt2d.shape}")
    checks = {**fields, "pt3d_68": pt3d, "pt2d": pt2d}
    for name, value in checks.items():
        if value is not None and not np.isfinite(value).all():
            raise BadInputError(path, f"non-finite values in {name}")
    return Annotation(fields["Pose_Para"], fields["Shape_Para"], fields["Exp_Para"], pt3d, pt2d)


def read_landmarks_file(path: str | Path) -> np.ndarray:
    """68 image-frame landmarks `(2, 68)` from a `.pts` (1-based x y, as menpo writes them), a `.ljson`
    (menpo's JSON, points stored [y, x]; the group of 68 points) or a `.mat`: an annotation (`pt3d_68`,
    else a 68-point `pt2d`) or a 300W-LP `landmarks/*_pts.mat` side file (`pts_3d`, else `pts_2d`).

    `.pts` coordinates are shifted by -1 to 0-based pixels."""
    import json

    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "missing landmark file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".pts":
            text = path.read_text()
            body = text[text.index("{") + 1 : text.index("}")]
            pts = np.array([[float(v) for v in line.split()] for line in body.strip().splitlines()]).T - 1.0
        elif suffix == ".ljson":
            doc = json.loads(path.read_text())
            groups = doc.get("groups")  # ljson v2 nests point groups; v1 has a top-level "landmarks"
            landmarks = next((g["landmarks"] for g in groups.values() if len(g["landmarks"]["points"]) == 68), None) if groups else doc["landmarks"]
            if landmarks is None:
                raise KeyError("no group of 68 points")
            points = landmarks["points"]
            pts = np.array(points, np.float64)[:, ::-1].T
        elif suffix == ".mat":
            pts = _landmarks_from_mat(path)
        else:
            raise BadInputError(path, f"unknown landmark format {suffix}")
    except (ValueError, KeyError, IndexError) as err:
        raise BadInputError(path, f"unreadable landmark file ({type(err).__name__})", error_name(err)) from None
    if pts is None or pts.shape != (2, 68) or not np.isfinite(pts).all():
        raise BadInputError(path, f"expected 68 finite 2D landmarks, got shape {None if pts is None else pts.shape}")
    return pts


def _load_mat(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """The variables of a `.mat` (`r3fa.mat5.read_mat5`, else scipy's `loadmat`), or `BadInputError`
    ("missing <what>" when there is no file)."""
    from scipy.io import loadmat

    try:
        data = read_regular_file(path)
        if data is not None:
            return read_mat5(data) or loadmat(io.BytesIO(data))
    except Exception as err:  # scipy raises several types for damaged files
        raise BadInputError(path, f"truncated or corrupt .mat ({type(err).__name__})", error_name(err)) from None
    raise _missing(path, what)


def _landmarks_from_mat(path: Path) -> np.ndarray | None:
    mat = _load_mat(path, "landmark file")
    for name in ("pt3d_68", "pts_3d", "pt2d", "pts_2d"):
        if name in mat:
            pts = _numeric(path, name, mat[name])
            pts = pts.T if pts.shape[0] == 68 else pts  # side files store (68, 2|3)
            if pts.shape[1] == 68:
                return pts[:2]
    return None
