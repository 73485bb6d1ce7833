"""A build killed with SIGKILL (the CLI and its Dask workers) after its first shard is complete, then run again
with the same command, gives a folder byte-identical to an uninterrupted build (made with 2 workers)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from r3fa.paths import PROJECT_ROOT

CONFIG = PROJECT_ROOT / "configs" / "mix" / "test.yaml"
R3FA = str(Path(sys.executable).parent / "r3fa")


def _env() -> dict[str, str]:
    # a fixed code version: the git state of a shared working tree may change between the two builds
    return {**os.environ, "R3FA_CODE_VERSION": "resume-test"}


def _build(out: Path, *options: str, **popen) -> subprocess.Popen:
    cmd = [R3FA, "shards", "build", str(CONFIG), "--out", str(out), "--format", "json", *options]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _summary(proc: subprocess.Popen) -> dict:
    """The JSON summary of a finished build (its stdout), after checking it succeeded."""
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    return json.loads(stdout)


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def test_killed_build_resumes_to_identical_bytes(tmp_path: Path) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _build(killed, start_new_session=True)  # own process group: the kill takes the Dask workers too
    deadline = time.monotonic() + 120
    while not any(killed.glob("*.done")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no shard finished in time"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(killed.glob("*.done")))
    assert not (killed / "manifest.json").exists(), "the build finished before the kill; nothing was resumed"
    left = sorted(p.name for p in killed.glob("*.tar")) + sorted(p.name for p in killed.rglob("*.tmp"))

    resumed = _summary(_build(killed))
    assert resumed["built"] == resumed["shards"] - done, (resumed, done)
    uninterrupted = _summary(_build(clean, "--workers", "2"))  # and the number of workers changes nothing
    assert uninterrupted["built"] == uninterrupted["shards"]
    assert {k: resumed[k] for k in ("samples", "rejected", "counts", "inputs")} == {
        k: uninterrupted[k] for k in ("samples", "rejected", "counts", "inputs")
    }

    assert _hashes(killed) == _hashes(clean), f"after a kill with {done} shard(s) done and {left} on disk"
    assert not list(killed.rglob("*.tmp")) and not (killed / ".r3fa-build.lock").exists()
