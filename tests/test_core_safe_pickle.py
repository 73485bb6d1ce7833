"""The restricted unpickler: the real third-party pickles load, a pickle that would run code is refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from r3fa.safe_pickle import UnsafePickleError, load_numeric_pickle

REAL_PICKLES = {
    "3ddfa/train.configs/param_whitening.pkl": {"param_mean": (62,), "param_std": (62,)},
    "3ddfa/train.configs/Model_PAF.pkl": {
        "mu_filter": (12288, 1),
        "w_filter": (12288, 40),
        "w_exp_filter": (12288, 10),
    },
    "3ddfa_v2/configs/param_mean_std_62d_120x120.pkl": {"mean": (62,), "std": (62,)},
    "3ddfa_v2/configs/tri.pkl": None,
}


@pytest.mark.parametrize("relative", sorted(REAL_PICKLES))
def test_real_pickles_load(data_root: Path, relative: str) -> None:
    loaded = load_numeric_pickle(data_root / relative)
    expected = REAL_PICKLES[relative]
    if expected is None:  # tri.pkl: a bare (3, 76073) triangle array
        assert np.asarray(loaded).shape == (3, 76073)
        return
    assert {k: np.asarray(loaded[k]).shape for k in expected} == expected
    assert all(np.isfinite(np.asarray(loaded[k], np.float64)).all() for k in expected)


class _RunsShell:
    """Unpickling an instance of this calls `os.system(command)`."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _RunsExec:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['R3FA_PICKLE_MARKER'], 'w').close()",))


def test_pickle_that_calls_os_system_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = tmp_path / "evil.pkl"
    payload.write_bytes(pickle.dumps({"mean": np.zeros(3), "x": _RunsShell(f"touch {marker}")}))
    with pytest.raises(UnsafePickleError, match="system"):
        load_numeric_pickle(payload)
    assert not marker.exists()
    # the payload is live: an ordinary unpickler does run it
    pickle.loads(payload.read_bytes())
    assert marker.exists()


def test_pickle_that_calls_exec_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("R3FA_PICKLE_MARKER", str(marker))
    payload = tmp_path / "evil.pkl"
    payload.write_bytes(pickle.dumps([1, 2, _RunsExec()]))
    with pytest.raises(UnsafePickleError, match="exec"):
        load_numeric_pickle(payload)
    assert not marker.exists()
