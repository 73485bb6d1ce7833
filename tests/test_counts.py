"""Exact target counts (issue 12 item 2): a mix's `targets` are delivered exactly from planned reserve
candidates, the rest accepted is surplus (not a rejection), the manifest records target/planned/delivered per
stage and per source, `verify` checks the sums, a shortfall beyond the tolerance fails with the reasons, and
face profiling is planned round robin over the sources whose |yaw| can still grow."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.io import loadmat, savemat

from pipelines.build import build_shards
from pipelines.cut import ShortfallError
from pipelines.mix import MixConfig
from pipelines.plan import make_plan
from pipelines.synthesis_stage import SynthesisConfig, can_turn, synthesis_jobs
from pipelines.verify import verify_shard_set
from r3fa.readers import discover_aflw2000

N_IMAGES = 10


@pytest.fixture(scope="module")
def source(aflw2000_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 AFLW2000-3D pairs; the last one's annotation turned to yaw 89.5 degrees (it cannot turn further)."""
    src = tmp_path_factory.mktemp("src")
    stems = sorted(p.stem for p in aflw2000_dir.glob("image0*.jpg"))[:N_IMAGES]
    for stem in stems:
        shutil.copy(aflw2000_dir / f"{stem}.jpg", src)
        shutil.copy(aflw2000_dir / f"{stem}.mat", src)
    mat = src / f"{stems[-1]}.mat"
    fields = {k: v for k, v in loadmat(mat).items() if not k.startswith("__")}
    fields["Pose_Para"] = fields["Pose_Para"].astype(np.float64)
    fields["Pose_Para"][0, 1] = math.radians(89.5)
    savemat(mat, fields)
    return src


def _mix(source: Path, **fields: object) -> MixConfig:
    return MixConfig.model_validate({
        "name": "counts", "sources": [{"kind": "aflw2000_3d", "root": str(source)}],
        "augmentation": {"copies_per_image": 2}, "val_fraction": 0.2, "samples_per_shard": 9, "seed": 5,
        "max_reject_fraction": 1.0, **fields,
    })  # fmt: skip


def test_synthesis_is_spread_over_the_sources_that_can_turn(source: Path) -> None:
    items = [i for i in discover_aflw2000(source)]
    assert [can_turn(item) for item in items] == [True] * (N_IMAGES - 1) + [False]
    plan = make_plan(_mix(source, synthesis={"count": 2 * (N_IMAGES - 1) + 3}))
    views = Counter(spec.item.key for spec in plan.candidates if spec.stage == "synthesis")
    assert items[-1].key not in views and len(views) == N_IMAGES - 1
    assert sorted(views.values()) == [2] * (N_IMAGES - 4) + [3] * 3  # round robin: no source gets a third view early
    jobs = synthesis_jobs(SynthesisConfig(count=7), 5, seed=1, sources=[0, 2, 4])
    assert {s for s, _ in jobs} == {0, 2, 4} and Counter(s for s, _ in jobs[:6]) == {0: 2, 2: 2, 4: 2}


@pytest.fixture(scope="module")
def exact(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """Real target 25 > the 20 primary copies (reserve copies needed); synthetic 6 from 9 planned views."""
    config = _mix(source, synthesis={"count": 1}, targets={"real": 25, "synthetic": 6}, reserve_fraction=0.5)
    out = tmp_path_factory.mktemp("exact") / "set"
    return out, build_shards(config, out, workers=0)


def test_targets_are_delivered_exactly(exact: tuple[Path, object]) -> None:
    out, summary = exact
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["by_stage"]["real"]["target"] == 25 and counts["by_stage"]["real"]["delivered"] == 25
    assert counts["by_stage"]["real"]["planned"] == math.ceil(25 * 1.5)
    assert counts["by_stage"]["synthetic"]["target"] == 6 and counts["by_stage"]["synthetic"]["delivered"] == 6
    assert counts["by_stage"]["synthetic"]["planned"] == 9
    assert counts["samples"] == summary.samples == 31 and counts["synthetic"] == 6
    assert counts["surplus"] == summary.surplus > 0
    assert counts["planned"] == counts["samples"] + counts["rejected"] + counts["surplus"]
    for c in [*counts["by_stage"].values(), *counts["by_source_stage"].values()]:
        assert c["planned"] == c["delivered"] + c["rejected"] + c["surplus"]
    rejected = pq.read_table(out / "rejections" / "rejected.parquet").num_rows
    stages = counts["by_stage"]
    assert rejected == counts["rejected"] == stages["real"]["rejected"] + stages["synthetic"]["rejected"]
    assert verify_shard_set(out) == []


def test_verify_catches_counts_that_do_not_add_up(exact: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = exact
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["counts"]["by_stage"]["synthetic"]["surplus"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert any("by_stage.synthetic" in problem for problem in verify_shard_set(copy))


def test_a_rebuild_with_another_reserve_keeps_the_counts(source: Path, tmp_path: Path) -> None:
    config = _mix(source, synthesis={"count": 1}, targets={"real": 25, "synthetic": 6}, reserve_fraction=0.8)
    summary = build_shards(config, tmp_path / "more", workers=0)
    assert summary.samples == 31 and summary.counts["synthetic"] == 6


def test_a_shortfall_fails_with_the_reasons(source: Path, tmp_path: Path) -> None:
    config = _mix(source, synthesis={"count": 1, "max_hole_fraction": 0.001}, targets={"synthetic": 4})
    out = tmp_path / "short"
    with pytest.raises(ShortfallError, match=r"synthetic: delivered \d of target 4") as err:
        build_shards(config, out, workers=0)
    assert "synthesis: profiling: holes in the face" in str(err.value)
    assert not (out / "manifest.json").exists()
    assert pq.read_table(out / "rejections" / "rejected.parquet").num_rows > 0


def test_a_config_without_targets_delivers_what_it_makes(source: Path) -> None:
    plan = make_plan(_mix(source, synthesis={"count": 4}))
    assert plan.target("augment") is None and plan.target("synthesis") is None
    assert Counter(spec.stage for spec in plan.candidates) == {"augment": 2 * N_IMAGES, "synthesis": 4}
