"""The per-sample and rejection Parquet tables of a shard set, with their schema read from `schemas/`.

`schemas/samples.schema.json` is the one definition of the columns (names, types, meaning, version); this
module turns it into Arrow schemas, builds rows and writes the files. The schema version is stored in each
file's metadata (`r3fa.schema_version`) so that a reader can refuse a file it does not know.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from r3fa.atomic import atomic_writer
from r3fa.paths import PROJECT_ROOT
from r3fa.records import Rejection, SampleRecord

SCHEMA_PATH = PROJECT_ROOT / "schemas" / "samples.schema.json"
_SCALARS = {"string": pa.string(), "bool": pa.bool_(), "int64": pa.int64(), "float32": pa.float32(),
            "float64": pa.float64(), "json": pa.string()}  # fmt: skip
_FIXED_LIST = re.compile(r"fixed_size_list<(\w+)>\[(\d+)\]")
# Parquet writer options of every table: zstd, no dictionary encoding (the string columns are mostly unique
# keys, paths and hashes; trying a dictionary first made a 128-row shard's file 39 % larger and its write 2.8x
# slower: docs/benchmarks.md, issue 15)
_PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": False}


def _arrow_type(name: str) -> pa.DataType:
    if name in _SCALARS:
        return _SCALARS[name]
    match = _FIXED_LIST.fullmatch(name)
    if match is None:
        raise ValueError(f"{SCHEMA_PATH}: unknown column type {name!r}")
    return pa.list_(_SCALARS[match[1]], int(match[2]))


@lru_cache(maxsize=1)
def _definition() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def schema_version() -> int:
    """Version of the per-sample table schema."""
    return int(_definition()["version"])


@lru_cache(maxsize=2)
def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of "samples" (a shard's Parquet) or "rejected" (rejected.parquet), with the
    version in its metadata."""
    fields = [pa.field(c["name"], _arrow_type(c["type"]), nullable=False) for c in _definition()[table]]
    return pa.schema(fields, metadata={"r3fa.schema_version": str(schema_version()), "r3fa.table": table})


@lru_cache(maxsize=1)
def row_fields() -> tuple[str, ...]:
    """The columns of a shard's table in schema order, but "shard" (a row made in phase 1 has no shard yet)."""
    return tuple(c["name"] for c in _definition()["samples"] if c["name"] != "shard")


def sample_row(
    record: SampleRecord, split: str, augment: str, jpeg_sha256: str, params: bytes, landmarks: bytes
) -> tuple:
    """One row of a shard's table, its values in `row_fields` order (`sample_columns` adds the shard).

    Args:
        record: the sample.
        split: "train" or "val".
        augment: the applied ops (`augment_json` of the record).
        jpeg_sha256: of the JPEG member.
        params, landmarks: the tar members' raw little-endian float32 labels (the columns hold the same values).
    """
    pitch, yaw, roll = (float(v) for v in record.pose_deg)
    values = {
        "key": record.key,
        "split": split,
        "source": record.source,
        "subject_id": record.subject_id,
        "image_path": record.image_path,
        "parent_key": record.parent_key,
        "synthetic": bool(record.synthetic),
        "fitted": bool(record.fitted),
        "yaw_increment": float(record.yaw_increment),
        "augment": augment,
        "yaw": yaw,
        "pitch": pitch,
        "roll": roll,
        "roi": np.asarray(record.roi, np.float64).tolist(),
        "params": params,
        "landmarks": landmarks,
        "label_nme": float(record.label_nme),
        "jpeg_sha256": jpeg_sha256,
    }
    return tuple(values[name] for name in row_fields())


def sample_columns(rows: Sequence[tuple], shard: str) -> dict[str, list]:
    """The columns of rows made by `sample_row`, written to shard `shard` (the tar's file name)."""
    columns = {name: list(values) for name, values in zip(row_fields(), zip(*rows))} if rows else {}
    return {"shard": [shard] * len(rows), **columns}


def augment_json(record: SampleRecord) -> str:
    """The record's applied ops as canonical JSON (`canonical_json`)."""
    return canonical_json(list(record.augment))


def canonical_json(value: object) -> str:
    """JSON with sorted keys, numpy scalars and arrays as plain numbers and lists (one encoder for all calls)."""
    return _CANONICAL.encode(value)


def plain_json(value: object) -> object:
    """`json.dumps` `default` for numpy scalars and arrays (as plain numbers and lists)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


_CANONICAL = json.JSONEncoder(sort_keys=True, default=plain_json)


def rejection_row(rejection: Rejection, shard: str = "") -> dict:
    """One row of rejected.parquet (`shard` is "" for an input set aside before any shard was planned)."""
    return {"key": rejection.key, "shard": shard, "source": rejection.source, "path": rejection.path,
            "reason": rejection.reason, "stage": rejection.stage, "error": rejection.error}  # fmt: skip


def _to_table(columns: Mapping[str, Sequence], schema: pa.Schema) -> pa.Table:
    """An Arrow table of `schema` from its columns; a float32 list column holds each row's raw little-endian
    float32 bytes (the tar's label members)."""
    arrays = {}
    for field in schema:
        values = columns[field.name]
        if pa.types.is_fixed_size_list(field.type) and pa.types.is_float32(field.type.value_type):
            flat = np.frombuffer(b"".join(values), "<f4")
            arrays[field.name] = pa.FixedSizeListArray.from_arrays(pa.array(flat), field.type.list_size)
        else:
            arrays[field.name] = pa.array(values, field.type)
    return pa.Table.from_pydict(arrays, schema=schema)


def write_table(path: str | Path, rows: Sequence[dict], table: str) -> None:
    """Write rows of "samples" or "rejected" to a Parquet file atomically (one row group)."""
    schema = arrow_schema(table)
    arrow = _to_table({field.name: [row[field.name] for row in rows] for field in schema}, schema)
    with atomic_writer(path) as fh:
        pq.write_table(arrow, fh, row_group_size=max(1, len(rows)), **_PARQUET_OPTIONS)


class TableWriter:
    """Write a "samples" or "rejected" Parquet file atomically, one row group per `write` call, so that a
    large table never sits in memory whole: `with TableWriter(path, "samples") as w: w.write(columns)`.
    The file is fsynced, its folder is not: a shard's writer fsyncs the folder once for the shard's files."""

    def __init__(self, path: str | Path, table: str):
        self.schema = arrow_schema(table)
        self._file = atomic_writer(path, sync_folder=False)
        self._writer = pq.ParquetWriter(self._file.__enter__(), self.schema, **_PARQUET_OPTIONS)

    def write(self, columns: Mapping[str, Sequence]) -> None:
        """Append the rows of `columns` (column name -> values) as one row group (nothing for no rows)."""
        rows = len(next(iter(columns.values()), []))
        if rows:
            self._writer.write_table(_to_table(columns, self.schema), row_group_size=rows)

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()
        self._file.__exit__(*exc)


def read_table(paths: Sequence[str | Path], table: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Concatenate Parquet files of one kind, checking their schema version."""
    schema = arrow_schema(table)
    parts = []
    for path in paths:
        part = pq.read_table(path, columns=list(columns) if columns else None)
        found = (pq.read_schema(path).metadata or {}).get(b"r3fa.schema_version", b"?").decode()
        if found != str(schema_version()):
            raise ValueError(f"{path}: schema version {found}, this code reads {schema_version()}")
        parts.append(part)
    if not parts:
        return schema.empty_table().select(list(columns)) if columns else schema.empty_table()
    return pa.concat_tables(parts)
