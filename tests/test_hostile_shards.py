"""A shard set damaged as a careless or hostile user would: `r3fa shards verify` reports every case as a finding
(never a traceback), and neither loader ever loses or invents a sample silently (an error names shard and key).

Each case damages a copy of one shard set built from configs/mix/test.yaml (real AFLW2000-3D crops)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.verify import verify_shard_set
from r3fa.errors import UserError
from r3fa.loaders import create_loader
from r3fa.loaders.shardset import ShardDataError
from r3fa.provenance import file_sha256

R3FA = str(Path(sys.executable).parent / "r3fa")
KINDS = ["dali", "torch"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.build import build_shards
    from r3fa.paths import PROJECT_ROOT

    out = tmp_path_factory.mktemp("shards") / "set"
    build_shards(PROJECT_ROOT / "configs" / "mix" / "test.yaml", out, workers=0)
    return out


@pytest.fixture
def copy(built: Path, tmp_path: Path) -> Path:
    out = tmp_path / "set"
    shutil.copytree(built, out)
    return out


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _write_manifest(out: Path, manifest: dict) -> None:
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _verify_json(out: Path) -> tuple[int, dict]:
    """`r3fa shards verify --format json`: exit code and report."""
    run = subprocess.run([R3FA, "shards", "verify", str(out), "--format", "json"], capture_output=True, text=True)
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode, json.loads(run.stdout)


def _verify(out: Path) -> tuple[int, dict]:
    """The same in this process (the command adds only the JSON and the exit code)."""
    problems = verify_shard_set(out)
    return int(bool(problems)), {"out": str(out), "ok": not problems, "problems": problems}


def _train_shard(out: Path, n: int = 0) -> dict:
    return [e for e in _manifest(out)["shards"] if e["split"] == "train"][n]


def _edit_parquet(out: Path, entry: dict, column: str, value: Callable, rehash: bool) -> None:
    path = out / entry["parquet"]
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[0] = value(values[0])
    table = table.set_column(table.schema.get_field_index(column), table.schema.field(column), pa.array(values, table.schema.field(column).type))
    pq.write_table(table, path)
    if rehash:  # a careful forger also fixes the manifest's hash of the file
        manifest = _manifest(out)
        for e in manifest["shards"]:
            if e["file"] == entry["file"]:
                e["parquet_sha256"], e["parquet_bytes"] = file_sha256(path), path.stat().st_size
        _write_manifest(out, manifest)


def test_an_intact_set_verifies(built: Path) -> None:
    assert _verify_json(built) == (0, {"out": str(built), "ok": True, "problems": []})
    manifest = _manifest(built)
    assert all(len(e["parquet_sha256"]) == 64 and e["parquet_bytes"] > 0 for e in manifest["shards"])


@pytest.mark.parametrize(("column", "value"), [("yaw", lambda v: v + 40.0), ("source", lambda v: "afw")])
@pytest.mark.parametrize("rehash", [False, True])
def test_an_edited_parquet_column_is_caught(copy: Path, column: str, value: Callable, rehash: bool) -> None:
    entry = _train_shard(copy)
    _edit_parquet(copy, entry, column, value, rehash)
    rc, report = (_verify_json if column == "yaw" and not rehash else _verify)(copy)
    assert rc == 1
    problems = "\n".join(report["problems"])
    assert f"column(s) {column} differ from" in problems  # the tar's KEY.json says otherwise
    assert ("differs from the manifest" in problems) is not rehash
    if column == "source":  # the manifest's counts no longer match the rows either
        assert "counts.by_source" in problems


@pytest.mark.parametrize(
    "damage",
    [
        lambda w: {**w, "mean": [0.0] * 62, "std": [0.0] * 62},  # zeroed
        lambda w: {**w, "std": [0.0] * 62},
        lambda w: {**w, "mean": [m * 1.01 + 1e-3 for m in w["mean"]]},  # slightly off
    ],
)
def test_a_wrong_whitening_is_caught(copy: Path, damage: Callable) -> None:
    manifest = _manifest(copy)
    manifest["whitening"] = damage(manifest["whitening"])
    _write_manifest(copy, manifest)
    rc, report = _verify(copy)
    assert rc == 1 and any("whitening" in p for p in report["problems"]), report


@pytest.mark.parametrize("fix_samples", [False, True])
def test_a_shard_removed_with_its_manifest_entry_is_caught(copy: Path, fix_samples: bool) -> None:
    manifest = _manifest(copy)
    victim = [e for e in manifest["shards"] if e["split"] == "train"][-1]  # the last: no gap in the numbering
    manifest["shards"] = [e for e in manifest["shards"] if e is not victim]
    if fix_samples:  # also make samples and the per-split/source/bin counts agree with what is left
        counts = manifest["counts"]
        counts["samples"] -= victim["count"]
        counts["by_split"]["train"] -= victim["count"]
    _write_manifest(copy, manifest)
    for suffix in (".tar", ".idx", ".parquet", ".done"):
        (copy / victim["file"]).with_suffix(suffix).unlink()
    rc, report = _verify(copy)
    assert rc == 1
    assert fix_samples is any("counts.planned" in p for p in report["problems"]), report
    assert any("counts." in p for p in report["problems"])


def test_a_gap_in_the_shard_numbers_is_caught(copy: Path) -> None:
    manifest = _manifest(copy)
    victim = _train_shard(copy, 0)
    manifest["shards"] = [e for e in manifest["shards"] if e["file"] != victim["file"]]
    _write_manifest(copy, manifest)
    (copy / victim["file"]).unlink()
    rc, report = _verify(copy)
    assert rc == 1 and any(victim["file"].removesuffix(".tar") in p and "not listed" in p for p in report["problems"])


@pytest.mark.parametrize(
    ("target", "damage"),
    [
        ("parquet", lambda b: b[: len(b) // 2]),  # truncated Parquet
        ("parquet", lambda b: b"PAR1" + b"\0" * 64 + b"PAR1"),  # a Parquet footer that lies
        ("tar", lambda b: bytes(np.random.default_rng(0).integers(0, 256, len(b), dtype=np.uint8))),  # garbage
        ("tar", lambda b: b[: len(b) // 3]),  # truncated tar
        ("idx", lambda b: b"\xff\xfe not an index"),
        ("rejected", lambda b: b[:10]),
        ("manifest", lambda b: b[: len(b) // 2]),  # not JSON
        ("manifest", lambda b: b"[1, 2, 3]"),  # JSON, not a manifest
        ("manifest", lambda b: json.dumps({**json.loads(b), "shards": [{"file": 3}]}).encode()),
    ],
)
def test_a_corrupt_file_is_a_finding_not_a_traceback(copy: Path, target: str, damage: Callable) -> None:
    entry = _train_shard(copy)
    path = {
        "parquet": copy / entry["parquet"],
        "tar": copy / entry["file"],
        "idx": copy / entry["idx"],
        "rejected": copy / _manifest(copy)["rejected_file"],
        "manifest": copy / "manifest.json",
    }[target]
    path.write_bytes(damage(path.read_bytes()))
    rc, report = (_verify_json if target in ("manifest", "tar") else _verify)(copy)
    assert rc == 1 and report["problems"] and not report["ok"]


def test_verify_and_inspect_refuse_a_folder_that_is_no_shard_set(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a folder"):
        verify_shard_set(tmp_path / "nowhere")
    for command in (["verify", str(tmp_path / "nowhere")], ["inspect", str(tmp_path)]):
        run = subprocess.run([R3FA, "shards", *command], capture_output=True, text=True)
        assert run.returncode == 2, run.stdout + run.stderr
        assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


# --- loaders -------------------------------------------------------------------------------------------------


def _index_lines(out: Path, entry: dict) -> list[str]:
    return (out / entry["idx"]).read_text().splitlines()


def _span_start(line: str) -> int:
    fields = line.split()
    return min(int(fields[i + 1]) for i in range(0, len(fields), 4)) - 512


def _epoch(out: Path, kind: str) -> list[dict]:
    return list(create_loader(out, "train", 8, kind=kind, drop_last=False, num_threads=0))


@pytest.mark.parametrize("kind", KINDS)
def test_a_tar_truncated_at_a_sample_boundary_is_an_error_naming_shard_and_key(copy: Path, kind: str) -> None:
    entry = _train_shard(copy)
    lines = _index_lines(copy, entry)
    cut = _span_start(lines[10])  # samples 10.. are gone, the index still lists them
    tar = copy / entry["file"]
    tar.write_bytes(tar.read_bytes()[:cut])
    key = lines[10].split()[3].split(".")[0]
    with pytest.raises(ShardDataError, match=f"{entry['file']}, sample {key}: members lie outside the tar"):
        _epoch(copy, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_a_tar_cut_mid_sample_is_an_error_naming_the_key(copy: Path, kind: str) -> None:
    entry = _train_shard(copy)
    lines = _index_lines(copy, entry)
    tar = copy / entry["file"]
    tar.write_bytes(tar.read_bytes()[: int(lines[5].split()[1]) + 100])  # inside sample 4's JPEG
    with pytest.raises(ShardDataError, match=lines[5].split()[3].split(".")[0]):
        _epoch(copy, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_an_index_listing_fewer_samples_than_the_manifest_is_an_error(copy: Path, kind: str) -> None:
    entry = _train_shard(copy)
    lines = _index_lines(copy, entry)
    (copy / entry["idx"]).write_text("\n".join([f"v1.2 {len(lines) - 3}", *lines[1:-2]]) + "\n")
    with pytest.raises(ShardDataError, match=f"the manifest lists {entry['count']} samples, the index {len(lines) - 3}"):
        _epoch(copy, kind)


@pytest.mark.parametrize("name", ["../../x", "/etc/x", "a.b", "x/../y"])
def test_unsafe_member_names_are_refused(copy: Path, name: str) -> None:
    entry = _train_shard(copy)
    lines = _index_lines(copy, entry)
    key = lines[3].split()[3].split(".")[0]
    lines[3] = lines[3].replace(key, name)
    (copy / entry["idx"]).write_text("\n".join(lines) + "\n")
    with pytest.raises(ShardDataError, match="unsafe or unexpected member name"):
        _epoch(copy, "torch")


@pytest.mark.parametrize("kind", KINDS)
def test_an_index_that_does_not_describe_its_tar_is_an_error(copy: Path, kind: str) -> None:
    entry = _train_shard(copy)
    lines = _index_lines(copy, entry)
    # sample 0's line keeps its member names but points at sample 1's bytes
    fields = lines[1].split()
    other = lines[2].split()
    lines[1] = " ".join(other[j] if j % 4 in (1, 2) else fields[j] for j in range(len(fields)))
    (copy / entry["idx"]).write_text("\n".join(lines) + "\n")
    with pytest.raises(ShardDataError, match=f"{fields[3].split('.')[0]}.*where the index puts") as caught:
        list(create_loader(copy, "train", 8, kind=kind, drop_last=False, num_threads=2))  # from a worker too
    assert "\n" not in str(caught.value)  # one line, not a worker's traceback
