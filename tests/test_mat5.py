"""The small MAT v5 reader reads what scipy reads, and leaves every other file to scipy."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from r3fa.mat5 import read_mat5


def _scipy_variables(data: bytes) -> dict[str, np.ndarray]:
    return {k: v for k, v in loadmat(io.BytesIO(data)).items() if not k.startswith("__")}


def _assert_same(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], where: object) -> None:
    assert sorted(ours) == sorted(theirs), where
    for name, value in theirs.items():
        assert ours[name].dtype == value.dtype and ours[name].shape == value.shape, (where, name)
        np.testing.assert_array_equal(ours[name], value, err_msg=f"{where} {name}")


def test_every_mat_file_of_the_data_folder_reads_as_scipy_reads_it(data_root: Path) -> None:
    """Every `.mat` under the data folder (2,000 AFLW2000-3D annotations, a 300W-LP one, model files): ours is
    scipy's reading, or None (scipy then reads it); every annotation takes the fast path."""
    files = sorted(data_root.rglob("*.mat"))
    annotations = [f for f in files if f.parent.name in ("aflw2000_3d", "300w_lp_sample")]
    assert len(annotations) > 2000
    for path in files:
        data = path.read_bytes()
        ours = read_mat5(data)
        if ours is None:
            assert path not in annotations, path
            continue
        _assert_same(ours, _scipy_variables(data), path)


def _saved(variables: dict, compress: bool) -> bytes:
    buffer = io.BytesIO()
    savemat(buffer, variables, do_compression=compress)
    return buffer.getvalue()


@pytest.mark.parametrize("compress", [False, True])
def test_numeric_types_and_shapes_round_trip(compress: bool) -> None:
    variables = {
        "a_double": np.arange(12.0).reshape(3, 4),
        "single": np.float32([[1.5, -2.25, np.inf]]),
        "ints": np.int16([[-3], [7]]),
        "bytes": np.uint8([[1, 2, 3, 4, 5]]),
        "wide": np.int64([[2**40]]),
        "empty": np.zeros((0, 3)),
        "x": np.float64([[np.nan]]),  # one-letter name: a "small data element" of the file format
    }
    data = _saved(variables, compress)
    _assert_same(read_mat5(data), _scipy_variables(data), "saved")


@pytest.mark.parametrize(
    "variables",
    [{"s": {"field": np.ones(3)}}, {"c": np.array([[1 + 2j]])}, {"t": "text"},
     {"cell": np.array([[np.ones(2)]], dtype=object)}],
    ids=["struct", "complex", "char", "cell"],
)
def test_other_variables_are_left_to_scipy(variables: dict) -> None:
    for compress in (False, True):
        assert read_mat5(_saved({"ok": np.ones((2, 2)), **variables}, compress)) is None


def test_damaged_files_are_left_to_scipy(data_root: Path) -> None:
    """Cut inside an element, or with a byte changed in a compressed stream: None (scipy then reads it or
    raises). A file cut between two variables is a valid file with fewer variables, read as scipy reads it."""
    data = (data_root / "aflw2000_3d" / "image00002.mat").read_bytes()
    boundaries = [128, 382, 484, 572, 856, 2253, 2556, 2643, 2698]  # where its nine variables start
    for end in [*range(0, len(data), 97), *(b - 1 for b in boundaries)]:
        assert read_mat5(data[:end]) is None, end
    for end in boundaries[1:]:
        _assert_same(read_mat5(data[:end]), _scipy_variables(data[:end]), end)
    for at in range(200, len(data), 211):
        broken = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
        ours = read_mat5(broken)
        if ours is not None:  # the change left a valid file: then it must read as scipy reads it
            _assert_same(ours, _scipy_variables(broken), at)
    assert read_mat5(b"not a mat file" * 20) is None
