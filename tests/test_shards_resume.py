"""A build killed with SIGKILL (the CLI and its Dask workers) after its first shard is complete, then run again
with the same command, gives a folder byte-identical to an uninterrupted build (made with 2 workers)."""

from __future__ import annotations

import hashlib
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
    cmd = [R3FA, "shards", "build", str(CONFIG), "--out", str(out), *options]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def test_killed_build_resumes_to_identical_bytes(tmp_path: Path) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _build(killed, start_new_session=True)  # own process group: the kill takes the Dask workers too
    deadline = time.monotonic() + 120
    while not any(killed.glob("*.done")):
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no shard finished in time"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(killed.glob("*.done")))
    assert not (killed / "manifest.json").exists(), "the build finished before the kill; nothing was resumed"
    left = sorted(p.name for p in killed.glob("*.tar")) + sorted(p.name for p in killed.rglob("*.tmp"))

    resumed = _build(killed)
    output = resumed.communicate(timeout=180)[0].decode()
    assert resumed.returncode == 0, output
    assert f"{9 - done} built" in output or done == 9, output
    uninterrupted = _build(clean, "--workers", "2")  # and the number of workers changes nothing
    output = uninterrupted.communicate(timeout=180)[0].decode()
    assert uninterrupted.returncode == 0, output

    assert _hashes(killed) == _hashes(clean), f"after a kill with {done} shard(s) done and {left} on disk"
    assert not list(killed.rglob("*.tmp"))
