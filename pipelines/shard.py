"""Build one planned shard: make its samples, write tar + index, Parquet, rejections, then `.done`.

This is the unit of work the runner distributes (one call per shard) and the unit of resumption: the
`.done` marker is written last and names the shard's fingerprint (config, inputs hash, keys), the tar's sha256 and the
counts, so a later run can skip the shard and the manifest can be written without re-reading tars.
Files of one shard, for `{stem}` = `{name}-{split}-{NNNNNN}`:
`{stem}.tar`, `{stem}.idx`, `{stem}.parquet`, `parts/{stem}.rejected.parquet`, `{stem}.done`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from r3fa.atomic import write_bytes_atomic
from pipelines.mix import MixConfig
from pipelines.plan import ShardSpec
from pipelines.samples import make_samples
from pipelines.tables import augment_json, rejection_row, sample_row, write_table
from pipelines.writer import ShardWriter
from r3fa.provenance import file_sha256
from r3fa.records import Rejection, SampleRecord, rejection_of

PARTS_DIR = "parts"
IMAGE_EXT, PARAMS_EXT, LANDMARKS_EXT, META_EXT = "jpg", "params.f32", "lms.f32", "json"


@dataclass(frozen=True)
class ShardFiles:
    """Paths of one shard's files in a shard-set folder."""

    tar: Path
    idx: Path
    parquet: Path
    rejected: Path
    done: Path

    @classmethod
    def of(cls, out_dir: str | Path, stem: str) -> "ShardFiles":
        out = Path(out_dir)
        return cls(out / f"{stem}.tar", out / f"{stem}.idx", out / f"{stem}.parquet",
                   out / PARTS_DIR / f"{stem}.rejected.parquet", out / f"{stem}.done")  # fmt: skip

    def outputs(self) -> tuple[Path, ...]:
        return self.tar, self.idx, self.parquet, self.rejected, self.done


@dataclass(frozen=True)
class ShardResult:
    """What a finished shard reports back to the driver (small: no samples)."""

    name: str
    split: str
    count: int
    rejected: int


def read_done(files: ShardFiles) -> dict | None:
    """The `.done` marker's content, or None when the shard is not complete."""
    try:
        return json.loads(files.done.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def sample_members(record: SampleRecord, split: str, jpeg: bytes) -> dict[str, bytes]:
    """The tar members of one sample: JPEG crop, raw little-endian float32 labels and a JSON summary."""
    meta = {
        "key": record.key,
        "split": split,
        "source": record.source,
        "subject_id": record.subject_id,
        "parent_key": record.parent_key,
        "synthetic": bool(record.synthetic),
        "fitted": bool(record.fitted),
        "yaw_increment": float(record.yaw_increment),
        "pose_deg": [float(v) for v in record.pose_deg],
        "label_nme": float(record.label_nme),
        "augment": json.loads(augment_json(record)),
    }
    return {
        IMAGE_EXT: jpeg,
        PARAMS_EXT: np.asarray(record.params, "<f4").reshape(62).tobytes(),
        LANDMARKS_EXT: np.asarray(record.landmarks, "<f4").reshape(136).tobytes(),
        META_EXT: json.dumps(meta, sort_keys=True).encode(),
    }


def encode_jpeg(crop: np.ndarray, quality: int) -> bytes:
    """Encode a BGR crop as JPEG at a fixed quality (deterministic)."""
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def build_shard(shard: ShardSpec, config: MixConfig, out_dir: str | Path, stamp: str) -> ShardResult:
    """Make and write one shard; its `.done` marker is written last.

    Args:
        shard: the planned shard.
        config: the mix.
        out_dir: the shard-set folder.
        stamp: the build stamp (`pipelines.build.build_stamp`) that the marker's fingerprint is made from.

    Returns:
        Its name, split and counts of written and rejected samples.
    """
    files = ShardFiles.of(out_dir, shard.name)
    files.rejected.parent.mkdir(parents=True, exist_ok=True)
    rows, rejections = [], []
    with ShardWriter(files.tar, files.idx) as writer:
        for spec, made in make_samples(shard.samples, config):
            if isinstance(made, SampleRecord):
                try:
                    jpeg = encode_jpeg(made.crop, config.jpeg_quality)
                    members = sample_members(made, shard.split, jpeg)
                except Exception as err:  # a sample that cannot be encoded is rejected like any other
                    rejection = rejection_of(err, spec.item.image_path, "encode")
                    made = replace(rejection, key=spec.key, source=spec.item.source)
            if isinstance(made, Rejection):
                rejections.append(rejection_row(made, shard.tar))
                continue
            writer.write(made.key, members)
            rows.append(sample_row(made, shard.tar, shard.split, hashlib.sha256(jpeg).hexdigest()))
    write_table(files.parquet, rows, "samples")
    write_table(files.rejected, rejections, "rejected")
    done = {
        "fingerprint": shard.fingerprint(stamp),
        "count": len(rows),
        "rejected": len(rejections),
        "tar_sha256": file_sha256(files.tar),
    }
    write_bytes_atomic(files.done, json.dumps(done, sort_keys=True).encode())
    return ShardResult(shard.name, shard.split, len(rows), len(rejections))
