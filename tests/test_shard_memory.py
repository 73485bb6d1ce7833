"""Phase 2's worker memory does not grow with the samples of its shard (issue 12 / 15: the 1/10 build's workers
within 1.2x of the 1/100 build's). What a worker receives is a compact task (integer arrays, no Python object per
sample), the tar's index is streamed to disk instead of held, and the keys read are checked against the plan by
the shard's fingerprint rather than by a per-sample list. Memory itself is measured by bench/bench_rehearsal.py;
these tests check the shapes that make it flat, and that the check still refuses a wrong part."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import yaml

from pipelines.build import SOURCES_PER_PART, build_shards, build_stamp
from pipelines.cut import cut_candidates
from pipelines.index import IndexWriter, Member, format_index
from pipelines.manifest import inputs_hash
from pipelines.mix import load_mix
from pipelines.plan import SampleSpec, ShardSpec, assign_shards, make_plan
from pipelines.shard import ShardFiles, ShardTask, build_shard
from r3fa.readers import SourceItem


def _shard(samples: int) -> tuple[ShardSpec, dict[str, tuple[str, int, int, int]]]:
    """A planned shard of `samples` samples of 40 source items spread over 30 parts, and their locations."""
    items = [SourceItem(f"300wlp_AFW_{i:08d}_1_0", "300wlp/AFW", f"AFW/{i}", f"/d/AFW/{i}.jpg", f"/d/AFW/{i}.mat")
             for i in range(40)]  # fmt: skip
    specs = tuple(SampleSpec(f"{items[n % 40].key}_a{n // 40}", items[n % 40], "augment", n // 40, rank=n)
                  for n in range(samples))  # fmt: skip
    locations = {spec.key: (f"set-part-{n % 30:06d}", 11_000 * n, 10_000 + n % 2_000, (2_654_435_761 * n) % 2**32)
                 for n, spec in enumerate(specs)}  # fmt: skip
    return ShardSpec("set-train-000000", "train", 0, specs), locations


def test_a_shard_task_costs_a_few_bytes_per_sample() -> None:
    small, large = (ShardTask.of(*_shard(n), stamp="stamp") for n in (1_000, 5_000))
    per_sample = (len(pickle.dumps(large)) - len(pickle.dumps(small))) / 4_000
    assert per_sample < 25  # part index (4) + offset (8) + length (8) + CRC-32 (4); a SampleSpec per sample was ~200
    shard, locations = _shard(5_000)
    assert list(large.locations()) == [locations[spec.key] for spec in shard.samples]
    assert large.fingerprint == shard.fingerprint("stamp")
    assert large.parts == tuple(f"set-part-{n:06d}" for n in range(30))


def test_the_streamed_index_is_the_index_text(tmp_path: Path) -> None:
    samples = [[Member(f"k{n}.{ext}", 512 + 2048 * n + i * 1024, 100 + n + i) for i, ext in enumerate(("jpg", "json"))]
               for n in range(50)]  # fmt: skip
    writer = IndexWriter(tmp_path / "a.idx")
    for members in samples:
        writer.add(members)
    writer.close()
    assert (tmp_path / "a.idx").read_text() == format_index(samples)
    empty = IndexWriter(tmp_path / "empty.idx")
    empty.close()
    assert (tmp_path / "empty.idx").read_text() == format_index([]) == "v1.2 0\n"
    dropped = IndexWriter(tmp_path / "dropped.idx")
    dropped.add(samples[0])
    dropped.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.idx", "empty.idx"]


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> tuple[Path, Path]:
    """A small build whose phase-1 record files are kept (so a shard can be written again from them)."""
    source = {"kind": "aflw2000_3d", "root": str(data_root / "aflw2000_3d"), "limit": 4}
    mix = {"name": "mem", "sources": [source], "augmentation": {"copies_per_image": 2}, "seed": 5,
           "val_fraction": 0.0, "samples_per_shard": 4}  # fmt: skip
    config = tmp_path_factory.mktemp("mix") / "mem.yaml"
    config.write_text(yaml.safe_dump(mix))
    out = tmp_path_factory.mktemp("kept") / "set"
    build_shards(config, out, workers=0, keep_parts=True)
    return config, out


def test_a_part_that_no_longer_holds_the_planned_samples_is_refused(kept: tuple[Path, Path]) -> None:
    config_path, out = kept
    config = load_mix(config_path)
    plan = make_plan(config)
    stamp = build_stamp(config, inputs_hash(plan.items)[0])
    cut = cut_candidates(plan, plan.parts(config.name, SOURCES_PER_PART), out)
    shard = assign_shards(config, cut.delivered)[0]
    files = ShardFiles.of(out, shard.name)
    before = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in files.outputs()}
    first, second = (spec.key for spec in shard.samples[:2])
    swapped = {**cut.locations, first: cut.locations[second], second: cut.locations[first]}
    for path in files.outputs():
        path.unlink()
    with pytest.raises(RuntimeError, match="not the planned ones"):
        build_shard(ShardTask.of(shard, swapped, stamp), out, stamp)
    assert not any(path.exists() for path in files.outputs()) and not list(out.glob("*.tmp"))
    build_shard(ShardTask.of(shard, cut.locations, stamp), out, stamp)
    assert {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in files.outputs()} == before


def test_local_workers_run_without_the_dask_profiler() -> None:
    """Its history of one-second profiles made a worker's memory grow with the time it had worked."""
    import dask
    import distributed  # noqa: F401  (its import loads the distributed.* config defaults)

    from pipelines.runner import run_tasks

    assert dask.config.get("distributed.worker.profile.enabled")  # Dask's default, left alone in this process
    assert run_tasks(dask.config.get, ["distributed.worker.profile.enabled"], workers=1) == [False]


def _worker_filters() -> list[str]:
    import logging

    return [getattr(f, "__name__", type(f).__name__) for f in logging.getLogger("distributed.worker").filters]


def test_local_workers_drop_the_heartbeat_failure_of_a_shutdown_race_and_nothing_else() -> None:
    """dask/distributed#7105: a heartbeat racing the cluster's shutdown logged an ERROR with a traceback at the end
    of a finished build."""
    import logging

    from pipelines.quiet_shutdown import drop_heartbeat_failure
    from pipelines.runner import run_tasks

    assert run_tasks(lambda _: _worker_filters(), [0], workers=1) == [["drop_heartbeat_failure",
                                                                       "drop_user_error_failure"]]  # fmt: skip
    record = logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, "%s.", ("Failed to communicate "
                               "with scheduler during heartbeat",), None)  # fmt: skip
    other = logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, "Compute Failed", (), None)
    assert not drop_heartbeat_failure(record) and drop_heartbeat_failure(other)


@pytest.mark.parametrize(("exception", "dropped"), [("DamagedPartError('parts/x.bin is changed')", True),
                                                     ("UserError('a mistake')", True),
                                                     ("RuntimeError('shard x: the samples read are not')", False),
                                                     ("ValueError('UserError')", False)])  # fmt: skip
def test_a_task_failure_is_dropped_from_the_worker_log_only_for_a_user_error(exception: str, dropped: bool) -> None:
    """A task that raises a `UserError` is reported by the driver as one line; its worker's "Compute Failed"
    record (with the traceback) is dropped. Any other failure stays in the worker's log."""
    import logging

    import pipelines.parts  # noqa: F401  (defines DamagedPartError, as a worker running a build has)
    from pipelines.quiet_shutdown import drop_user_error_failure

    fields = ("key", "executing", "task", exception, "Traceback (most recent call last): ...")
    record = logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1,
                               "Compute Failed\nKey: %s\nState: %s\nTask: %s\nException: %r\nTraceback: %r\n",
                               fields, None)  # fmt: skip
    assert drop_user_error_failure(record) is not dropped
