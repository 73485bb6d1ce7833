"""Shard sets built from configs/mix/test.yaml on real AFLW2000-3D images, read back by other code: the
`webdataset` library, DALI's `fn.readers.webdataset` (CPU) with our index files, DuckDB for the Parquet, DALI's
`wds2idx` for the index format; the manifest against its JSON schema; `r3fa shards verify` on an intact and
a corrupted copy; the split by subject; whitening equal to `Whitening.fit` over the train rows."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import jsonschema
import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipelines.build import build_shards
from pipelines.mix import MixConfig, load_mix
from pipelines.plan import assign_shards, make_plan, split_of
from r3fa.params import Whitening
from r3fa.paths import PROJECT_ROOT
from r3fa.shard_contract import MANIFEST_SCHEMA_PATH

CONFIG = PROJECT_ROOT / "configs" / "mix" / "test.yaml"
R3FA = str(Path(sys.executable).parent / "r3fa")


@pytest.fixture(scope="session")
def shard_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "test"
    summary = build_shards(CONFIG, out, workers=0)
    assert summary.samples > 100 and summary.shards > 4 and summary.counts["by_split"]["val"] > 0
    return out


@pytest.fixture(scope="session")
def manifest(shard_set: Path) -> dict:
    return json.loads((shard_set / "manifest.json").read_text())


@pytest.fixture(scope="session")
def rows(shard_set: Path, manifest: dict) -> list[dict]:
    """Every sample's Parquet row, in manifest and tar order, read with DuckDB (not with pyarrow, the writer)."""
    out = []
    for entry in manifest["shards"]:
        con = duckdb.connect()
        cursor = con.execute(f"SELECT * FROM read_parquet('{shard_set / entry['parquet']}')")
        names = [d[0] for d in cursor.description]
        out += [dict(zip(names, values)) for values in cursor.fetchall()]
    return out


def test_manifest_follows_its_schema_and_counts(shard_set: Path, manifest: dict, rows: list[dict]) -> None:
    jsonschema.validate(manifest, json.loads(MANIFEST_SCHEMA_PATH.read_text()))
    counts = manifest["counts"]
    assert counts["samples"] == len(rows) == sum(s["count"] for s in manifest["shards"])
    assert counts["samples"] + counts["rejected"] + counts["surplus"] == counts["planned"]
    assert manifest["inputs"]["by_source"] == {"aflw2000_3d": {"inputs": 40, "accepted": 40, "rejected": 0, "surplus": 0}}
    assert counts["synthetic"] == sum(r["synthetic"] for r in rows) > 0
    assert sum(counts["by_yaw_bin"].values()) == len(rows)
    assert manifest["crop_convention"] == "3ddfa_v1" and manifest["config"]["name"] == "test"
    assert len(manifest["inputs"]["sha256"]) == 64 and manifest["inputs"]["items"] == 40
    names = sorted(p.name for p in shard_set.glob("*.tar"))
    assert names == sorted(s["file"] for s in manifest["shards"]) and names[0] == "test-train-000000.tar"
    assert (shard_set / "config.resolved.yaml").is_file()


def test_rows_hold_the_issue_columns(rows: list[dict]) -> None:
    row = rows[0]
    for column in ("key", "shard", "source", "parent_key", "synthetic", "yaw_increment", "augment", "yaw", "pitch",
                   "roll", "roi", "params", "landmarks", "label_nme", "split", "subject_id", "jpeg_sha256"):  # fmt: skip
        assert column in row
    assert len(row["roi"]) == 4 and len(row["params"]) == 62 and len(row["landmarks"]) == 136
    assert all("." not in r["key"] for r in rows) and len({r["key"] for r in rows}) == len(rows)
    synthetic = [r for r in rows if r["synthetic"]]
    assert all(r["parent_key"] and r["yaw_increment"] != 0 for r in synthetic)
    assert any(op["name"] == "flip" for r in rows for op in json.loads(r["augment"]))


def test_split_is_by_subject_and_never_leaks(rows: list[dict]) -> None:
    splits: dict[str, set[str]] = {}
    for r in rows:
        splits.setdefault(r["subject_id"], set()).add(r["split"])
        assert r["split"] == split_of(r["subject_id"], 0.2)
    assert all(len(s) == 1 for s in splits.values())


def test_webdataset_library_reads_what_parquet_says(shard_set: Path, manifest: dict, rows: list[dict]) -> None:
    urls = [str(shard_set / s["file"]) for s in manifest["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == [r["key"] for r in rows]
    for sample, row in zip(samples, rows):
        np.testing.assert_array_equal(np.frombuffer(sample["params.f32"], "<f4"), np.float32(row["params"]))
        np.testing.assert_array_equal(np.frombuffer(sample["lms.f32"], "<f4"), np.float32(row["landmarks"]))
        assert json.loads(sample["json"])["split"] == row["split"]
    assert all(hashlib.sha256(s["jpg"]).hexdigest() == r["jpeg_sha256"] for s, r in zip(samples, rows))


def test_dali_reads_the_shards_with_our_index_files(shard_set: Path, manifest: dict, rows: list[dict]) -> None:
    from nvidia.dali import fn, pipeline_def, types

    shards = [s for s in manifest["shards"] if s["count"]]
    total = sum(s["count"] for s in shards)

    @pipeline_def(batch_size=total, num_threads=1, device_id=None)
    def pipe():
        jpg, params, lms = fn.readers.webdataset(
            paths=[str(shard_set / s["file"]) for s in shards],
            index_paths=[str(shard_set / s["idx"]) for s in shards],
            ext=["jpg", "params.f32", "lms.f32"],
            dtypes=[types.UINT8, types.FLOAT, types.FLOAT],
            random_shuffle=False,
        )
        return fn.decoders.image(jpg, device="cpu", output_type=types.BGR), params, lms

    p = pipe()
    p.build()
    images, params, lms = p.run()
    for i, row in enumerate(rows):
        assert np.array(images[i]).shape == (120, 120, 3)
        np.testing.assert_array_equal(np.array(params[i]), np.float32(row["params"]))
        np.testing.assert_array_equal(np.array(lms[i]), np.float32(row["landmarks"]))


def test_index_files_equal_dali_wds2idx(shard_set: Path, manifest: dict, tmp_path: Path) -> None:
    from wds2idx import IndexCreator

    for entry in manifest["shards"]:
        theirs = tmp_path / entry["idx"]
        with IndexCreator(str(shard_set / entry["file"]), str(theirs), verbose=False) as creator:
            creator.create_index()
        assert (shard_set / entry["idx"]).read_text() == theirs.read_text()


def test_whitening_is_fit_over_the_train_rows(manifest: dict, rows: list[dict]) -> None:
    train = np.array([r["params"] for r in rows if r["split"] == "train"], np.float32)
    expected = Whitening.fit(train, "x")
    stored = Whitening.from_dict(manifest["whitening"])
    np.testing.assert_allclose(stored.mean, expected.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stored.std, expected.std, rtol=1e-4, atol=1e-6)


def test_plan_is_deterministic_and_seeded() -> None:
    config = load_mix(CONFIG)
    def keys(config: MixConfig) -> list[list[str]]:
        return [[s.key for s in shard.samples] for shard in assign_shards(config, make_plan(config).candidates)]

    assert keys(config) == keys(config)
    assert keys(config.model_copy(update={"seed": 8})) != keys(config)


def test_verify_passes_then_fails_on_a_corrupted_copy(shard_set: Path, manifest: dict, tmp_path: Path) -> None:
    ok = subprocess.run([R3FA, "shards", "verify", str(shard_set), "--format", "json"], capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"], ok.stdout + ok.stderr
    copy = tmp_path / "copy"
    shutil.copytree(shard_set, copy)
    tar = copy / manifest["shards"][1]["file"]
    data = bytearray(tar.read_bytes())
    data[2000] ^= 0xFF  # inside the first sample's JPEG
    tar.write_bytes(bytes(data))
    bad = subprocess.run([R3FA, "shards", "verify", str(copy), "--format", "json"], capture_output=True, text=True)
    assert bad.returncode == 1
    problems = json.loads(bad.stdout)["problems"]
    assert any("sha256" in problem and tar.name in problem for problem in problems), problems


def test_inspect_counts_and_draws_a_contact_sheet(shard_set: Path, tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.png"
    run = subprocess.run([R3FA, "shards", "inspect", str(shard_set), "--sheet", str(sheet), "--n", "8"],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert sheet.stat().st_size > 10_000  # the counts table is rich text: not asserted (see pipelines.inspect)


def test_rejected_file_is_empty_for_clean_inputs(shard_set: Path) -> None:
    assert pq.read_table(shard_set / "rejections" / "rejected.parquet").num_rows == 0


def test_a_complete_build_is_skipped_on_rerun(shard_set: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in shard_set.glob("*.tar")}
    summary = build_shards(CONFIG, shard_set, workers=0)
    assert summary.built == 0 and summary.samples > 100
    assert before == {p.name: p.stat().st_mtime_ns for p in shard_set.glob("*.tar")}


def test_third_party_readers_open_the_folder_as_documented(shard_set: Path, manifest: dict) -> None:
    """docs/usage-shards.md's one-liners: `DIR/*.parquet` is exactly the sample tables (rejections and the
    phase-1 indexes live in subfolders), so DuckDB, pyarrow and pandas count the manifest's samples."""
    import glob

    import pyarrow.dataset as ds

    folder = str(shard_set)
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/*.parquet')").fetchall()[0][0] == manifest["counts"]["samples"]
    assert duckdb.sql(f"SELECT count(DISTINCT key) FROM read_parquet('{folder}/*.parquet')").fetchall()[0][0] == manifest["counts"]["samples"]
    assert ds.dataset(sorted(glob.glob(f"{folder}/*.parquet")), format="parquet").count_rows() == manifest["counts"]["samples"]
    table = ds.dataset(folder, format="parquet", exclude_invalid_files=True, ignore_prefixes=[".", "_", "parts", "rejections"])
    assert table.count_rows() == manifest["counts"]["samples"]
    rejected = duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/rejections/rejected.parquet')").fetchall()[0][0]
    assert rejected == manifest["counts"]["rejected"]


def test_pandas_reads_the_glob_as_documented(shard_set: Path, manifest: dict) -> None:
    """pandas is not a dependency of r3fa, only of its tests (the dev extra), so the documented one-liner is run."""
    import glob

    import pandas as pd

    frame = pd.concat(map(pd.read_parquet, sorted(glob.glob(f"{shard_set}/*.parquet"))))
    assert len(frame) == manifest["counts"]["samples"] and frame["yaw"].notna().all()


@pytest.mark.parametrize("name,size", [("a.jpg", 1), ("k" * 60 + ".json", 12345), ("é" * 40 + ".x", 511),
                                       ("z" * 100, 8**11 - 1), ("d/" * 60 + "q", 3)])  # fmt: skip
def test_tar_header_is_tarfile_s(name, size):
    """The writer's direct ustar header is byte for byte the one `tarfile` makes (long names take its path)."""
    import tarfile

    from pipelines.writer import _tar_info, tar_header

    assert tar_header(name, size) == _tar_info(name, size).tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
