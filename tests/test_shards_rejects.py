"""Bad inputs in a source folder (an unreadable image, a truncated .mat, NaN parameters, a label far from its
landmarks) are set aside in rejected.parquet with path, reason, stage and exception class; the build goes on and
counts them (more cases, through the CLI: tests/test_hostile_build.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.io import loadmat, savemat

from pipelines.build import build_shards
from pipelines.mix import MixConfig
from pipelines.verify import verify_shard_set


@pytest.fixture()
def bad_source(aflw2000_dir: Path, tmp_path: Path) -> Path:
    """Eight real AFLW2000-3D samples, four of them damaged (one way each)."""
    folder = tmp_path / "source"
    folder.mkdir()
    stems = sorted(p.stem for p in aflw2000_dir.glob("image*.jpg"))[:8]
    for stem in stems:
        for suffix in (".jpg", ".mat"):
            shutil.copy(aflw2000_dir / f"{stem}{suffix}", folder / f"{stem}{suffix}")
    (folder / f"{stems[0]}.jpg").write_bytes(b"not a jpeg at all")
    mat = folder / f"{stems[1]}.mat"
    mat.write_bytes(mat.read_bytes()[:300])
    for stem, change in ((stems[2], "nan"), (stems[3], "shape")):
        path = folder / f"{stem}.mat"
        data = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
        if change == "nan":
            data["Pose_Para"] = np.full_like(data["Pose_Para"], np.nan)
        else:
            data["Shape_Para"] = data["Shape_Para"] * 40.0  # label far from the annotated landmarks
        savemat(path, data)
    return folder


def test_bad_inputs_are_rejected_and_the_build_goes_on(bad_source: Path, tmp_path: Path) -> None:
    config = MixConfig(
        name="bad",
        sources=[{"kind": "aflw2000_3d", "root": str(bad_source)}],
        augmentation={"copies_per_image": 1},
        samples_per_shard=3,
        val_fraction=0.0,
        max_reject_fraction=0.5,
    )
    out = tmp_path / "out"
    summary = build_shards(config, out, workers=0)
    assert summary.planned == 8 and summary.samples == 4 and summary.rejected == 4

    rejected = pq.read_table(out / "rejections" / "rejected.parquet").to_pylist()
    by_file = {Path(r["path"]).name: (r["reason"], r["stage"], r["error"]) for r in rejected}
    stems = sorted(p.stem for p in bad_source.glob("*.jpg"))
    reason, stage, error = by_file[f"{stems[0]}.jpg"]
    assert reason.startswith("unreadable image") and (stage, error) == ("ingest", "BadInputError")
    reason, stage, error = by_file[f"{stems[1]}.mat"]
    assert reason.startswith("truncated or corrupt .mat") and stage == "ingest" and error not in ("", "BadInputError")
    assert by_file[f"{stems[2]}.mat"] == ("non-finite values in Pose_Para", "ingest", "BadInputError")
    reason, stage, error = by_file[f"{stems[3]}.mat"]
    assert stage == "label" and reason.startswith("label NME") and error == ""
    assert all(r["key"] and r["shard"] == "" and r["source"] == "aflw2000_3d" for r in rejected)
    assert summary.inputs == {"aflw2000_3d": {"inputs": 8, "accepted": 4, "rejected": 4, "surplus": 0}}
    assert verify_shard_set(out) == []


def test_a_300wlp_tree_source_builds(data_root: Path, tmp_path: Path) -> None:
    """The 300W-LP reader path, on a tree holding the one real 300W-LP sample and its mirror folder."""
    tree = tmp_path / "300W_LP"
    for folder in ("IBUG", "IBUG_Flip"):
        (tree / folder).mkdir(parents=True)
        for suffix in (".jpg", ".mat"):
            shutil.copy(data_root / "300w_lp_sample" / f"IBUG_image_008_1_0{suffix}", tree / folder)
    config = MixConfig(name="lp", sources=[{"kind": "300wlp", "root": str(tree)}],
                       augmentation={"copies_per_image": 2}, val_fraction=0.0)  # fmt: skip
    summary = build_shards(config, tmp_path / "out", workers=0)
    assert summary.samples + summary.rejected == 4 and summary.samples > 0
    assert set(summary.counts["by_source"]) <= {"300wlp/IBUG", "300wlp/IBUG_Flip"}
    assert verify_shard_set(tmp_path / "out") == []


def test_one_failing_copy_is_rejected_alone_and_its_siblings_become_samples(
    aflw2000_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An item's copies are made together (one label pass); when one of them fails, the others are still made and
    only the failing copy is a rejection, with the stage and exception class of its own failure."""
    import r3fa.augment
    from pipelines.plan import make_plan
    from pipelines.samples import EncodedSample, make_samples
    from r3fa.records import Rejection

    photometric = r3fa.augment._photometric
    calls = {"n": 0}

    def fails_on_second_augmented_copy(crop, policy, rng):
        calls["n"] += 1
        if calls["n"] % 2 == 0:  # the 2nd augmented copy (copy 0 is the plain crop: no photometric ops)
            raise ZeroDivisionError("broken op")
        return photometric(crop, policy, rng)

    monkeypatch.setattr(r3fa.augment, "_photometric", fails_on_second_augmented_copy)
    config = MixConfig(name="copies", sources=[{"kind": "aflw2000_3d", "root": str(aflw2000_dir), "limit": 1}],
                       augmentation={"copies_per_image": 3}, val_fraction=0.0)  # fmt: skip
    specs = make_plan(config).candidates
    assert [s.copy_index for s in specs] == [0, 1, 2]
    made = [result for _, result in make_samples([specs], config)]
    assert [type(m) for m in made] == [EncodedSample, EncodedSample, Rejection]
    assert (made[2].stage, made[2].error, made[2].key) == ("augment", "ZeroDivisionError", specs[2].key)
