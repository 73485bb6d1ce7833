"""The two-phase builder (issue 15 item 1): every source decoded once, records made into phase-1 parts, shards
written from encoded records read by offset. The shards' bytes depend neither on the number of workers nor on
how the sources are cut into phase-1 tasks; the record files are deleted unless kept; a finished build whose
record files are gone remakes just the parts a lost shard needs, to the same bytes; each source is decoded
once however many records it gives."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import pipelines.samples
from pipelines.build import build_shards
from pipelines.parts import DamagedPartError, PartReader
from pipelines.verify import verify_shard_set


def _hashes(folder: Path, pattern: str = "*") -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob(pattern)) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def fixed_code_version() -> Iterator[None]:
    """The manifest records the code version; the shared working tree may change between two builds."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("R3FA_CODE_VERSION", "two-phase-test")
        yield


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    source = {"kind": "aflw2000_3d", "root": str(data_root / "aflw2000_3d"), "limit": 12}
    mix = {"name": "twophase", "sources": [source],
           "augmentation": {"copies_per_image": 2.5}, "synthesis": {"count": 5}, "seed": 3, "val_fraction": 0.3,
           "samples_per_shard": 7}  # fmt: skip
    path = tmp_path_factory.mktemp("mix") / "twophase.yaml"
    path.write_text(yaml.safe_dump(mix))
    return path


@pytest.fixture(scope="module")
def reference(config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "set"
    summary = build_shards(config, out, workers=0, sources_per_part=5)
    assert summary.samples > 30 and summary.shards >= 5 and summary.counts["synthetic"] > 0
    assert verify_shard_set(out) == []
    return out


def _outputs(folder: Path) -> dict[str, str]:
    """The shard set's files (parts/ holds the phase-1 indexes, which follow `sources_per_part`)."""
    return {name: digest for name, digest in _hashes(folder).items() if not name.startswith("parts/")}


def test_two_workers_give_the_same_bytes_as_none(config: Path, reference: Path, tmp_path: Path) -> None:
    build_shards(config, tmp_path / "w2", workers=2, sources_per_part=2)  # other phase-1 tasks too
    assert _outputs(tmp_path / "w2") == _outputs(reference)
    assert len(_outputs(reference)) > 20


def test_record_files_are_deleted_unless_kept(config: Path, reference: Path, tmp_path: Path) -> None:
    assert not list(reference.glob("parts/*.bin")) and len(list(reference.glob("parts/*.json"))) == 3
    build_shards(config, tmp_path / "kept", workers=0, sources_per_part=5, keep_parts=True)
    assert len(list((tmp_path / "kept").glob("parts/*.bin"))) == 3
    assert _hashes(tmp_path / "kept", "*.tar") == _hashes(reference, "*.tar")
    made = [(index.stem, entry) for index in sorted((tmp_path / "kept").glob("parts/*.json"))
            for entry in json.loads(index.read_text())["entries"] if len(entry) == 4]  # fmt: skip
    made = made[::2] + made[1::2][::-1]  # jump between parts
    with PartReader(tmp_path / "kept", max_open=1) as reader:  # each jump closes the other part's file
        assert [reader.read(part, *where).key for part, (_, *where) in made] == [e[0] for _, e in made]


@pytest.mark.parametrize("damage", ["cut short", "changed"])
def test_a_damaged_part_stops_the_build_and_is_made_again(config: Path, reference: Path, tmp_path: Path,
                                                          damage: str) -> None:  # fmt: skip
    """Part files are not fsynced: after a crash of the machine one may be cut short or hold other bytes while
    its index survives. Phase 2 checks every record's CRC-32: the build stops with one line naming the part
    (no wrong byte reaches a shard), and once its index is deleted as the line says, the part is made again
    and the set has the reference's bytes."""
    out = tmp_path / "set"
    build_shards(config, out, workers=0, sources_per_part=5, keep_parts=True)
    for path in [*out.glob("*.tar"), *out.glob("*.done"), out / "manifest.json"]:
        path.unlink()  # as if the machine stopped before phase 2
    part = sorted(out.glob("parts/*.bin"))[1]
    data = bytearray(part.read_bytes())
    if damage == "cut short":
        del data[len(data) // 2 :]
    else:
        data[len(data) // 2] ^= 0xFF  # one bit pattern of one byte
    part.write_bytes(bytes(data))
    with pytest.raises(DamagedPartError) as stopped:
        build_shards(config, out, workers=0, sources_per_part=5, keep_parts=True)
    message = str(stopped.value)
    assert f"parts/{part.name} is {damage}" in message and f"delete parts/{part.stem}.json" in message
    written, expected = _hashes(out, "*.tar"), _hashes(reference, "*.tar")
    assert all(written[done.with_suffix(".tar").name] == expected[done.with_suffix(".tar").name]
               for done in out.glob("*.done"))  # the shards finished before the stop are the reference's  # fmt: skip
    (out / "parts" / f"{part.stem}.json").unlink()
    build_shards(config, out, workers=0, sources_per_part=5)
    assert _outputs(out) == _outputs(reference)


def test_a_shard_marker_reaches_the_disk_after_the_files_it_vouches_for(config: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The crash contract of phase 2, on the fsyncs and renames of a real build: each of a shard's tar, index
    and Parquet file is fsynced before it is renamed into place; their folder is fsynced after the three
    renames and before the `.done` marker is renamed into place (fsynced first, its folder after)."""
    events: list[tuple[str, ...]] = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def logged_replace(source: str | Path, target: str | Path) -> None:
        events.append(("replace", str(source), str(target)))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    out = (tmp_path / "set").resolve()
    build_shards(config, out, workers=0)
    stems = [done.stem for done in sorted(out.glob("*.done"))]
    assert len(stems) >= 5
    for stem in stems:
        placed = {}
        for suffix in (".tar", ".idx", ".parquet", ".done"):
            at, (_, temporary, _) = next((i, e) for i, e in enumerate(events)
                                         if e[0] == "replace" and e[2] == str(out / f"{stem}{suffix}"))  # fmt: skip
            assert ("fsync", temporary) in events[:at], f"{stem}{suffix} renamed before its data was fsynced"
            placed[suffix] = at
        folder_syncs = [i for i, event in enumerate(events) if event == ("fsync", str(out))]
        last_file = max(placed[suffix] for suffix in (".tar", ".idx", ".parquet"))
        assert any(last_file < i < placed[".done"] for i in folder_syncs), f"{stem}: no folder fsync before .done"
        assert any(i > placed[".done"] for i in folder_syncs), f"{stem}: .done's folder not fsynced"


def test_a_lost_shard_of_a_finished_build_is_rebuilt_to_the_same_bytes(config: Path, reference: Path,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "set"
    build_shards(config, out, workers=0, sources_per_part=5)
    lost = sorted(out.glob("*.tar"))[2]
    lost.unlink()
    summary = build_shards(config, out, workers=0, sources_per_part=5)
    assert summary.built == 1
    assert _hashes(out) == _hashes(reference)


def test_each_source_is_decoded_once(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads, load = [], pipelines.samples.load_source_files

    def counting(item, **kwargs):
        loads.append(item.key)
        return load(item, **kwargs)

    monkeypatch.setattr(pipelines.samples, "load_source_files", counting)
    summary = build_shards(config, tmp_path / "once", workers=0)
    assert len(loads) == len(set(loads)) == 12 and summary.planned > 30


def test_parquet_row_groups_keep_the_tables(config: Path, reference: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Phase 2 writes a shard's Parquet in row groups (flat memory); the rows are those of one big group."""
    import pyarrow.parquet as pq

    import pipelines.shard

    monkeypatch.setattr(pipelines.shard, "ROW_GROUP_ROWS", 3)
    out = tmp_path / "groups"
    build_shards(config, out, workers=0, sources_per_part=5)
    assert verify_shard_set(out) == []
    assert _hashes(out, "*.tar") == _hashes(reference, "*.tar")
    for table in sorted(reference.glob("*.parquet")):
        grouped = pq.ParquetFile(out / table.name)
        assert grouped.metadata.num_row_groups == -(-grouped.metadata.num_rows // 3)
        assert grouped.read().to_pylist() == pq.read_table(table).to_pylist()


def test_a_batch_of_sources_is_labelled_in_one_pass(config: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The vectorised passes run once per batch of sources (12 sources, parts of 5: three batches); a pass that
    failed and fell back to one item at a time would show as one call per item."""
    calls = {"measure_sources": 0, "augment_copies": 0}
    for name in calls:
        original = getattr(pipelines.samples, name)

        def counting(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(pipelines.samples, name, counting)
    build_shards(config, tmp_path / "batched", workers=0, sources_per_part=5)
    assert calls == {"measure_sources": 3, "augment_copies": 3}


def test_each_done_marker_holds_its_tars_sha256(reference: Path) -> None:
    # the writer hashes the tar as it writes it: the marker must still name the bytes on disk
    dones = sorted(reference.glob("*.done"))
    assert len(dones) >= 5
    for done in dones:
        tar = done.with_suffix(".tar")
        assert json.loads(done.read_text())["tar_sha256"] == hashlib.sha256(tar.read_bytes()).hexdigest(), tar.name
