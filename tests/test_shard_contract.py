"""The shard-set contract (`r3fa.shard_contract`): a built manifest round-trips through its model to the same
bytes, a manifest of another version or with a broken field is refused in one line naming the file and the
field, `r3fa shards verify` lists every such problem, the committed JSON schema is the model's, and training
and inference normalise pixels the same way.

One small real shard set (8 AFLW2000-3D images, 2 records each, no synthesis) is built once; each damaging case
works on a copy of its manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines.build import build_shards
from pipelines.samples import sample_meta
from pipelines.tables import augment_json, canonical_json
from pipelines.verify import verify_shard_set
from r3fa.errors import UserError
from r3fa.io import decode_image
from r3fa.loaders.shardset import SampleReader, plan_epoch, read_shards
from r3fa.loaders.torch_loader import read_batch
from r3fa.paths import PROJECT_ROOT
from r3fa.predictor import normalise_crops
from r3fa.records import SampleRecord
from r3fa.shard_contract import (
    LANDMARKS_EXT,
    MANIFEST_SCHEMA_PATH,
    MANIFEST_VERSION,
    PARAMS_EXT,
    ManifestError,
    ShardSetManifest,
    label_bytes,
    load_manifest,
    manifest_json,
    manifest_schema,
    read_label,
)

REGENERATE = (
    ".venv/bin/python -c \"import json; from r3fa.shard_contract import MANIFEST_SCHEMA_PATH, manifest_schema; "
    "MANIFEST_SCHEMA_PATH.write_text(json.dumps(manifest_schema(), indent=1) + '\\n')\""
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("contract")
    mix = yaml.safe_load((PROJECT_ROOT / "configs" / "mix" / "test.yaml").read_text())
    mix["name"] = "contract"
    mix["sources"][0]["limit"] = 8
    mix["augmentation"]["copies_per_image"] = 2
    mix.pop("synthesis")
    config = folder / "mix.yaml"
    config.write_text(yaml.safe_dump(mix))
    build_shards(config, folder / "set", workers=0)
    return folder / "set"


@pytest.fixture
def copy(built: Path, tmp_path: Path) -> Path:
    out = tmp_path / "set"
    shutil.copytree(built, out)
    return out


def _damage(folder: Path, edit) -> Path:
    path = folder / "manifest.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw, indent=1, sort_keys=True))
    return path


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, UserError)
    return message


def test_a_built_manifest_round_trips_to_the_same_bytes(built: Path) -> None:
    raw = (built / "manifest.json").read_bytes()
    manifest = load_manifest(built)
    assert manifest_json(manifest) == raw
    assert load_manifest(built / "manifest.json") == manifest
    assert manifest.manifest_version == MANIFEST_VERSION and manifest.name == "contract"
    assert manifest.counts.samples == sum(e.count for e in manifest.shards) > 0
    assert [e.file for e in manifest.split_shards("train")] == [s.tar.name for s in read_shards(built, "train")]
    whitening = manifest.whitening.to_whitening()
    assert whitening.mean.shape == whitening.std.shape == (62,)


def test_the_identity_ignores_the_code_version_only(built: Path) -> None:
    manifest = load_manifest(built)
    other_code = manifest.model_copy(update={"code_version": "another commit"})
    other_data = manifest.model_copy(update={"rejected_sha256": "0" * 64})
    assert other_code.identity() == manifest.identity() != other_data.identity()
    raw = json.loads((built / "manifest.json").read_text())  # what checkpoints of earlier builds recorded
    raw.pop("code_version")
    assert manifest.identity() == hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("version", [1, 3, "2", None])
def test_a_manifest_of_another_version_is_refused_in_one_line(copy: Path, version: object) -> None:
    path = _damage(copy, lambda m: m.update(manifest_version=version))
    with pytest.raises(ManifestError) as err:
        load_manifest(copy)
    message = _one_line(err)
    assert str(path) in message and f"manifest_version {version}" in message
    assert f"reads version {MANIFEST_VERSION}" in message and "rebuild" in message


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m["counts"].pop("samples"), "counts.samples"),
        (lambda m: m["shards"][0].update(count="3"), "shards.0.count"),
        (lambda m: m["shards"][0].update(count=3.0), "shards.0.count"),
        (lambda m: m["shards"][0].update(idx="../../elsewhere.idx"), "shards.0.idx"),
        (lambda m: m["whitening"]["std"].pop(), "whitening.std"),
        (lambda m: m["whitening"]["mean"].__setitem__(0, float("nan")), "whitening.mean.0"),
        (lambda m: m["counts"]["by_yaw_bin"].pop("60-90"), "counts.by_yaw_bin"),
        (lambda m: m.update(surprise=1), "surprise"),
        (lambda m: m["config"].pop("seed"), "config"),
    ],
)
def test_a_missing_or_mistyped_field_is_a_user_error_naming_it(copy: Path, edit, field: str) -> None:
    path = _damage(copy, edit)
    with pytest.raises(ManifestError) as err:
        load_manifest(copy)
    assert f"{path}: {field}" in _one_line(err)


def test_verify_reports_every_broken_field_as_a_finding(copy: Path) -> None:
    def edit(m: dict) -> None:
        m["counts"]["samples"] = -1
        m["shards"][1]["sha256"] = "not a hash"

    _damage(copy, edit)
    problems = verify_shard_set(copy)
    assert any("counts.samples" in p for p in problems) and any("shards.1.sha256" in p for p in problems), problems


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "not a shard set"), (b"{not json", "not a readable manifest"), (b"[1, 2]", "manifest_version None")],
)
def test_no_manifest_or_no_json_is_one_line(copy: Path, content: bytes | None, expected: str) -> None:
    path = copy / "manifest.json"
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    with pytest.raises(ManifestError) as err:
        load_manifest(copy)
    assert expected in _one_line(err)


def test_the_committed_schema_is_the_models() -> None:
    committed = json.loads(MANIFEST_SCHEMA_PATH.read_text())
    assert committed == manifest_schema(), f"schemas/manifest.schema.json is out of date; regenerate it: {REGENERATE}"
    assert committed["properties"]["manifest_version"]["const"] == MANIFEST_VERSION
    assert set(committed["required"]) == set(ShardSetManifest.model_fields)


def test_label_members_are_little_endian_float32_of_fixed_size() -> None:
    values = np.arange(136, dtype=np.float64).reshape(2, 68) / 3
    data = label_bytes(LANDMARKS_EXT, values)
    assert len(data) == 136 * 4 and data == values.reshape(-1).astype("<f4").tobytes()
    assert np.array_equal(read_label(LANDMARKS_EXT, data), values.reshape(-1).astype(np.float32))
    with pytest.raises(ValueError, match="expected 248"):
        read_label(PARAMS_EXT, data[:100])
    with pytest.raises(ValueError):
        label_bytes(PARAMS_EXT, np.zeros(61))


def test_training_and_inference_normalise_pixels_alike(built: Path) -> None:
    """A batch of the PyTorch loader (no online jitter) equals the predictor's input for the same decoded crops."""
    shards = read_shards(built, "train")
    plan = plan_epoch(shards, batch_size=4, seed=0, epoch=0, start_sample=0, rank=0, world_size=1, drop_last=False)
    with SampleReader(plan.shards) as reader:
        batch = read_batch(reader, plan, 0, None)
        crops = np.stack([decode_image(reader.read(int(i)).jpeg) for i in plan.batch(0)[1]])
    assert batch["image"].dtype == normalise_crops(crops).dtype
    assert np.array_equal(batch["image"].numpy(), normalise_crops(crops).numpy())
    assert batch["image"].min() >= -127.5 / 128 and batch["image"].max() <= 127.5 / 128


@pytest.mark.parametrize("text, number", [("plain", 1.5), ('quo"te \\ ñ ☃ \n', float("nan")), ("", -1e-7)])
def test_the_json_member_is_the_canonical_json_of_its_summary(text: str, number: float) -> None:
    """`sample_meta` writes the summary out by hand; it must be `canonical_json` of the summary's dict, the
    member's definition, for any strings and numbers (numpy float32 included, NaN in `json`'s spelling)."""
    record = SampleRecord(
        key=f"k{text}", source=text, subject_id=f"s/{text}", image_path="x.jpg", crop=np.zeros((1, 1, 3), np.uint8),
        roi=np.zeros(4), params=np.zeros(62, np.float32), landmarks=np.zeros((2, 68), np.float32),
        pose_deg=np.array([number, 12.25, -3.0], np.float32), label_nme=number, parent_key=text, synthetic=True,
        yaw_increment=np.float32(number), augment=({"name": "rotate", "degrees": number}, {"name": text}),
    )  # fmt: skip
    summary = {
        "key": record.key, "split": "val", "source": record.source, "subject_id": record.subject_id,
        "parent_key": record.parent_key, "synthetic": record.synthetic, "fitted": record.fitted,
        "yaw_increment": float(record.yaw_increment), "pose_deg": [float(v) for v in record.pose_deg],
        "label_nme": record.label_nme, "augment": list(record.augment),
    }  # fmt: skip
    assert sample_meta(record, "val", augment_json(record)) == canonical_json(summary)
