"""A caller's mistake is one line on stderr and exit code 2, never a traceback: `r3fa` (every command goes
through `cli.main.run`) and `python -m r3fa.training`. Each case is a real process; the checks are the exit
code, the number of stderr lines, the absence of "Traceback" and the gist of the message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from r3fa import __version__
from r3fa.paths import PROJECT_ROOT

TRAIN_CONFIG = PROJECT_ROOT / "configs/train/test.yaml"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)


def _one_line_error(done: subprocess.CompletedProcess, gist: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert gist in lines[0], lines[0]
    return lines[0]


def _config(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


BAD_CONFIGS = [
    ("- 1\n- 2\n", "YAML mapping of fields, found a list"),
    ("3.5\n", "found a float"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8 text"),
    ("optim: {lr: 0.1\n", "malformed YAML"),
    ("seed: -5\n", "seed: Input should be greater than or equal to 0"),
    ("optim: {lr: .inf}\n", "optim.lr: Input should be a finite number"),
    ("optim: {lr: -1}\n", "optim.lr: Input should be greater than 0"),
    ("model: {name: resnet9000}\n", "unknown model 'resnet9000'"),
]


@pytest.mark.parametrize(("text", "gist"), BAD_CONFIGS, ids=[g for _, g in BAD_CONFIGS])
def test_r3fa_train_with_a_bad_config(tmp_path: Path, text: str | bytes, gist: str) -> None:
    config = _config(tmp_path, text)
    line = _one_line_error(
        _run("-m", "cli.main", "train", "--config", str(config), "--shards", str(tmp_path), "--out", str(tmp_path / "o")),
        gist,
    )
    assert line.startswith(f"r3fa: error: {config}")


def test_python_m_r3fa_training_with_a_bad_config(tmp_path: Path) -> None:
    config = _config(tmp_path, "- a list\n")
    done = _run("-m", "r3fa.training", "--config", str(config), "--shards", str(tmp_path), "--out", str(tmp_path / "o"))
    assert _one_line_error(done, "found a list").startswith("python -m r3fa.training: error:")
    _one_line_error(_run("-m", "r3fa.training", "--config", str(config)), "arguments are required: --shards, --out")


def test_out_that_is_a_file_and_a_missing_shard_set(tmp_path: Path) -> None:
    a_file = tmp_path / "out.txt"
    a_file.write_text("x")
    common = ("-m", "cli.main", "train", "--config", str(TRAIN_CONFIG))
    _one_line_error(_run(*common, "--shards", str(tmp_path), "--out", str(a_file)), "the run directory is a file")
    missing = tmp_path / "no-such-shards"
    line = _one_line_error(_run(*common, "--shards", str(missing), "--out", str(tmp_path / "o")), "not a shard set")
    assert str(missing) in line


def test_a_checkpoint_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    fake = tmp_path / "model.pth"
    fake.write_text("these are not weights\n")
    done = _run("-m", "cli.main", "eval", "--checkpoint", str(fake), "--benchmark", "aflw2000-3d", "--fold", "1",
                "--n-folds", "20", "--out", str(tmp_path / "eval"), "--format", "json")  # fmt: skip
    assert str(fake) in _one_line_error(done, "not a readable checkpoint")
    assert not (tmp_path / "eval" / "nme.json").exists()


def test_usage_errors_are_one_line_too_and_version_prints() -> None:
    _one_line_error(_run("-m", "cli.main", "train", "--no-such-option"), "No such option")
    _one_line_error(_run("-m", "cli.main", "model", "summary", "resnet9000"), "unknown model 'resnet9000'")
    done = _run("-m", "cli.main", "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"r3fa {__version__}"
