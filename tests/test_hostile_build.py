"""The reliability contract of ingest and build under hostile or careless input (issue 11, items 1, 2, 11).

Each case is built in a temporary folder from copies of real AFLW2000-3D pairs, through the real `r3fa`
command (a subprocess: exit code, JSON on stdout, files; never rich text): the run completes, every input is a
sample or a rejection with its path, reason, stage and exception class (inputs = accepted + rejected, per
source), nothing valid is lost, no traceback reaches the user, and the audit counts what the build counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from scipy.io import loadmat, savemat

from pipelines.build import RejectionRateError, build_shards
from pipelines.manifest import inputs_hash
from pipelines.mix import load_mix
from pipelines.outdir import LOCK_NAME, BuildLock
from pipelines.verify import verify_shard_set
from r3fa.errors import UserError
from r3fa.image_header import image_size
from r3fa.io import BadInputError, decode_image
from r3fa.readers import SourceItem
from r3fa.shard_contract import MANIFEST_SCHEMA_PATH

R3FA = str(Path(sys.executable).parent / "r3fa")
BOMB_SIDE = 32000


# ----------------------------------------------------------------------------- helpers
def _r3fa(*args: str) -> subprocess.CompletedProcess:
    run = subprocess.run([R3FA, *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "R3FA_CODE_VERSION": "hostile-test"})  # fmt: skip
    assert "Traceback" not in run.stderr, run.stderr
    return run


def _build(config: Path, out: Path) -> subprocess.CompletedProcess:
    return _r3fa("shards", "build", str(config), "--out", str(out), "--workers", "0", "--format", "json")


def _summary(run: subprocess.CompletedProcess) -> dict:
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _user_error(run: subprocess.CompletedProcess) -> str:
    """The one `r3fa: error:` line of a refused command (exit code 2, nothing else on stderr)."""
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("r3fa: error: "), run.stderr
    return lines[0]


def _config(tmp_path: Path, root: Path | str, **fields: object) -> Path:
    config = {"name": "hostile", "sources": [{"kind": "aflw2000_3d", "root": str(root)}],
              "augmentation": {"copies_per_image": 1}, "val_fraction": 0.0, "samples_per_shard": 4, **fields}  # fmt: skip
    path = tmp_path / f"mix-{len(list(tmp_path.glob('mix-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _copy(stem: str, aflw: Path, folder: Path, name: str | None = None, image_suffix: str = ".jpg",
          mat_suffix: str = ".mat") -> tuple[Path, Path]:  # fmt: skip
    name = name or stem
    jpg, mat = folder / f"{name}{image_suffix}", folder / f"{name}{mat_suffix}"
    shutil.copyfile(aflw / f"{stem}.jpg", jpg)
    shutil.copyfile(aflw / f"{stem}.mat", mat)
    return jpg, mat


def _set_pose(mat: Path, index: int, value: float) -> None:
    fields = {k: v for k, v in loadmat(mat).items() if not k.startswith("__")}
    fields["Pose_Para"] = fields["Pose_Para"].astype(np.float64)  # a float64 field keeps 1e300 finite
    fields["Pose_Para"][0, index] = value
    savemat(mat, fields)


def _jpeg_declaring(data: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose first frame header (SOF) is rewritten to declare `width` x `height`."""
    pos = 2
    while data[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return data[: pos + 5] + struct.pack(">HH", height, width) + data[pos + 9 :]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@pytest.fixture(scope="session")
def png_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid 8-bit grey PNG of 32000x32000 black pixels in about 1 MB (3 GB as a BGR image)."""
    compressor, row = zlib.compressobj(9), bytes(BOMB_SIDE + 1)  # filter byte 0 + a row of zeros
    idat = b"".join(compressor.compress(row) for _ in range(BOMB_SIDE)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 0, 0, 0, 0)
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    return path


# ----------------------------------------------------------------------------- the hostile folder
GOOD = ("image00002", "image00004", "image00006", "image00008", "image00010")
# file name -> (reason prefix, stage, exception class); every one is an input that must be rejected
EXPECTED = {
    "image00013.mat": ("numpy.linalg.LinAlgError", "ingest", "numpy.linalg.LinAlgError"),
    "image00014.jpg": ("image too large: header declares 65000x65000", "ingest", "BadInputError"),
    "image00019.png": (f"image too large: header declares {BOMB_SIDE}x{BOMB_SIDE}", "ingest", "BadInputError"),
    "image00020.jpg": ("missing image (dangling symlink)", "ingest", "BadInputError"),
    "image00021.jpg": ("missing annotation", "discover", ""),
    "image00022.mat": ("missing image", "discover", ""),
    "image-00100.jpg": ("key collision: aflw2000_3d_image-00100 is also made from", "discover", ""),
    "image00026.jpg": ("key collision: same name as", "discover", ""),
    "image00028.jpg": ("unreadable image (empty file)", "ingest", "BadInputError"),
    "image00032.mat": ("truncated or corrupt .mat", "ingest", "scipy.io.matlab._miobase.MatReadError"),
    "image00035.jpg": ("unreadable image (not a JPEG, PNG", "ingest", "BadInputError"),
    "image00036.mat": ("truncated or corrupt .mat", "ingest", "ValueError"),
    "image00039.jpg": ("missing image", "ingest", "BadInputError"),
    "image00040.jpg": ("missing image (dangling symlink)", "ingest", "BadInputError"),
    "image\\xff41.jpg": ("file name is not valid UTF-8", "discover", ""),
    "image\\xff41.mat": ("file name is not valid UTF-8", "discover", ""),
    "image00042.mat": ("missing image", "discover", ""),
    "image00043.mat": ("non-finite values in the label's params", "label", ""),
}
ACCEPTED = {*GOOD, "image00023", "image 00100", "image00026"}  # stems of the inputs that must become samples


@pytest.fixture(scope="module")
def hostile_source(aflw2000_dir: Path, png_bomb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five clean pairs and one input per hostile case (the keys of EXPECTED; ACCEPTED lists the good ones)."""
    src = tmp_path_factory.mktemp("hostile") / "src"
    src.mkdir()
    for stem in GOOD:
        _copy(stem, aflw2000_dir, src)
    _copy("image00023", aflw2000_dir, src, image_suffix=".JPG", mat_suffix=".Mat")  # upper-case suffixes
    _set_pose(_copy("image00013", aflw2000_dir, src)[1], 6, 1e300)  # finite scale; the SVD of the pose fails
    jpg, _ = _copy("image00014", aflw2000_dir, src)
    jpg.write_bytes(_jpeg_declaring(jpg.read_bytes(), 65000, 65000))
    jpg, _ = _copy("image00019", aflw2000_dir, src)
    jpg.unlink()
    shutil.copyfile(png_bomb, src / "image00019.png")
    jpg, _ = _copy("image00020", aflw2000_dir, src)
    jpg.unlink()
    jpg.symlink_to(src / "gone" / "image00020.jpg")
    _copy("image00021", aflw2000_dir, src)[1].unlink()
    _copy("image00022", aflw2000_dir, src)[0].unlink()
    _copy("image00044", aflw2000_dir, src, name="image 00100")  # two stems, one key: the first in order keeps it
    _copy("image00045", aflw2000_dir, src, name="image-00100")
    _copy("image00026", aflw2000_dir, src, image_suffix=".JPG")  # and image00026.jpg: two images of one stem
    shutil.copyfile(aflw2000_dir / "image00026.jpg", src / "image00026.jpg")
    _copy("image00028", aflw2000_dir, src)[0].write_bytes(b"")
    _copy("image00032", aflw2000_dir, src)[1].write_bytes(b"")
    _copy("image00035", aflw2000_dir, src)[0].write_text("a text file, named .jpg\n")
    _copy("image00036", aflw2000_dir, src)[1].write_bytes((aflw2000_dir / "image00036.jpg").read_bytes())
    jpg, _ = _copy("image00039", aflw2000_dir, src)
    jpg.unlink()
    os.mkfifo(jpg)  # reading it would block forever
    jpg, _ = _copy("image00040", aflw2000_dir, src)
    jpg.unlink()
    jpg.symlink_to(jpg)  # a symlink loop
    jpg, mat = _copy("image00041", aflw2000_dir, src)
    os.rename(jpg, os.path.join(os.fsencode(src), b"image\xff41.jpg"))
    os.rename(mat, os.path.join(os.fsencode(src), b"image\xff41.mat"))
    jpg, _ = _copy("image00042", aflw2000_dir, src)
    jpg.unlink()
    jpg.mkdir()  # a folder named like an image
    _set_pose(_copy("image00043", aflw2000_dir, src)[1], 3, 1e300)  # finite, but the label is nowhere near
    return src


@pytest.fixture(scope="module")
def hostile_build(hostile_source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The hostile folder built through the CLI into an --out that already holds foreign files and stale
    temporaries of this builder."""
    tmp = tmp_path_factory.mktemp("hostile-build")
    out = tmp / "out"
    (out / "parts").mkdir(parents=True)
    foreign = ("notes.tmp", "hostile-train-000000.tar.bak.tmp", "parts/theirs.rejected.parquet.tmp")
    own = ("hostile-train-000000.tar.tmp", "manifest.json.abcd_123.tmp",
           "parts/hostile-part-000001.bin.x1y2z3w4.tmp")  # what r3fa.atomic / the shard writer leave
    for name in (*foreign, *own):
        (out / name).write_text("left here")
    return out, _summary(_build(_config(tmp, hostile_source, max_reject_fraction=1.0), out))


# ----------------------------------------------------------------------------- the cases
def test_every_input_is_a_sample_or_a_rejection(hostile_build: tuple[Path, dict]) -> None:
    out, summary = hostile_build
    inputs = len(EXPECTED) + len(ACCEPTED)
    assert summary["inputs"] == {"aflw2000_3d": {"inputs": inputs, "accepted": len(ACCEPTED), "rejected": len(EXPECTED), "surplus": 0}}
    rows = pq.read_table(out / "rejections" / "rejected.parquet").to_pylist()
    got = {Path(r["path"]).name: r for r in rows}
    assert set(got) == set(EXPECTED) and len(rows) == len(EXPECTED)
    for name, (reason, stage, error) in EXPECTED.items():
        row = got[name]
        assert row["reason"].startswith(reason), (name, row)
        assert (row["stage"], row["error"], row["source"]) == (stage, error, "aflw2000_3d"), (name, row)
    assert "not decoded" in got["image00019.png"]["reason"] and "not decoded" in got["image00014.jpg"]["reason"]
    assert got["image-00100.jpg"]["reason"].endswith("image 00100.jpg")
    assert got["image00026.jpg"]["reason"].endswith("image00026.JPG")
    assert all(r["shard"] == "" for r in rows)  # rejections happen before the shards are assigned
    assert all(r["key"] for r in rows if r["stage"] != "discover")


def test_nothing_valid_is_lost(hostile_build: tuple[Path, dict]) -> None:
    out, summary = hostile_build
    manifest = json.loads((out / "manifest.json").read_text())
    keys = [k for s in manifest["shards"] for k in pq.read_table(out / s["parquet"], columns=["key"]).column("key").to_pylist()]
    assert sorted(keys) == sorted(f"aflw2000_3d_{stem.replace(' ', '-')}_a0" for stem in ACCEPTED)
    counts = manifest["counts"]
    assert counts["planned"] == counts["samples"] + counts["rejected"] == len(ACCEPTED) + len(EXPECTED)
    assert counts["surplus"] == 0
    assert manifest["inputs"]["by_source"] == summary["inputs"]
    jsonschema.validate(manifest, json.loads(MANIFEST_SCHEMA_PATH.read_text()))
    assert verify_shard_set(out) == []


def test_only_the_builders_own_files_are_deleted(hostile_build: tuple[Path, dict]) -> None:
    out, _ = hostile_build
    kept = {"notes.tmp", "hostile-train-000000.tar.bak.tmp", "parts/theirs.rejected.parquet.tmp"}
    assert {str(p.relative_to(out)) for p in out.rglob("*.tmp")} == kept
    assert all((out / name).read_text() == "left here" for name in kept)
    assert not (out / LOCK_NAME).exists()


def test_the_audit_counts_what_the_build_counts(hostile_source: Path, hostile_build: tuple[Path, dict]) -> None:
    out, summary = hostile_build
    report = json.loads(_r3fa("labels", "audit", str(hostile_source), "--format", "json").stdout)
    assert report["inputs"] == report["count"] + len(report["rejected"]) == summary["inputs"]["aflw2000_3d"]["inputs"]
    built = {(r["path"], r["stage"], r["error"]) for r in pq.read_table(out / "rejections" / "rejected.parquet").to_pylist()}
    audited = {(r["path"], r["stage"], r["error"]) for r in report["rejected"]}
    assert audited == built
    assert report["count"] == len(ACCEPTED)


def test_a_decompression_bomb_is_refused_from_its_header(png_bomb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = png_bomb.read_bytes()
    assert len(data) < 2_000_000 and image_size(data) == (BOMB_SIDE, BOMB_SIDE)

    def never(*args: object) -> None:
        raise AssertionError("cv2.imdecode was asked to decode a decompression bomb")

    monkeypatch.setattr("r3fa.io.cv2.imdecode", never)
    with pytest.raises(BadInputError, match="image too large.*not decoded"):
        decode_image(data, str(png_bomb))


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".webp"])
def test_image_size_reads_the_header_of_every_format_opencv_writes(suffix: str) -> None:
    import cv2

    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
    ok, data = cv2.imencode(suffix, image[..., 0] if suffix == ".pgm" else image)
    assert ok and image_size(data.tobytes()) == (53, 37)
    assert image_size(data.tobytes()[:8]) is None  # cut short


def test_inputs_hash_tolerates_what_ingest_rejects(tmp_path: Path) -> None:
    (tmp_path / "b.mat").write_bytes(b"x")
    dangling = tmp_path / "a.jpg"
    dangling.symlink_to(tmp_path / "nowhere.jpg")
    item = SourceItem("k", "s", "s/k", str(dangling), str(tmp_path / "b.mat"))
    digest, files = inputs_hash([item])
    assert len(digest) == 64 and files == 2
    (tmp_path / "nowhere.jpg").write_bytes(b"now here")
    assert inputs_hash([item])[0] != digest


def test_too_many_rejections_fail_the_build_with_a_summary(aflw2000_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for stem in GOOD:
        _copy(stem, aflw2000_dir, src)
    _copy("image00013", aflw2000_dir, src)[0].write_bytes(b"")
    _set_pose(_copy("image00014", aflw2000_dir, src)[1], 6, 1e300)
    out = tmp_path / "out"
    line = _user_error(_build(_config(tmp_path, src), out))  # 2 of 7 > the default max_reject_fraction 0.2
    assert "too many inputs rejected (max_reject_fraction 0.2)" in line
    assert "aflw2000_3d: 2 of 7 inputs rejected (29%) > max_reject_fraction" in line
    assert not (out / "manifest.json").exists() and len(pq.read_table(out / "rejections" / "rejected.parquet")) == 2
    summary = build_shards(_config(tmp_path, src, max_reject_fraction=0.3), out, workers=0)  # the user allows it
    assert summary.inputs["aflw2000_3d"] == {"inputs": 7, "accepted": 5, "rejected": 2, "surplus": 0}


def test_a_source_of_mostly_unpaired_files_fails_before_building(aflw2000_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _copy(GOOD[0], aflw2000_dir, src)
    for stem in GOOD[1:]:
        _copy(stem, aflw2000_dir, src)[0].unlink()
    out = tmp_path / "out"
    with pytest.raises(RejectionRateError, match=r"aflw2000_3d: 4 of 5 inputs rejected \(80%\)"):
        build_shards(_config(tmp_path, src), out, workers=0)
    assert not list(out.glob("*.tar")) and len(pq.read_table(out / "rejections" / "rejected.parquet")) == 4


def test_a_second_build_into_a_held_folder_fails_at_once(aflw2000_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for stem in GOOD[:3]:
        _copy(stem, aflw2000_dir, src)
    config, out = _config(tmp_path, src), tmp_path / "out"
    first = build_shards(config, out, workers=0)
    before = _hashes(out)
    with BuildLock(out):  # a build holding the folder, as the first one did while it ran
        with pytest.raises(UserError, match="is being built by pid"):
            BuildLock(out).acquire()
        line = _user_error(_build(config, out))
        assert f"is being built by pid {os.getpid()} on " in line
    assert _hashes(out) == before and verify_shard_set(out) == []  # the refused build touched nothing
    again = build_shards(config, out, workers=0)
    assert again.built == 0 and again.samples == first.samples == 3


@pytest.mark.parametrize("case", ["missing", "empty", "only-text"])
def test_a_source_without_pairs_is_a_user_error(case: str, tmp_path: Path) -> None:
    root = tmp_path / "src"
    if case != "missing":
        root.mkdir()
    if case == "only-text":
        (root / "README.txt").write_text("no images here")
    out, config = tmp_path / "out", _config(tmp_path, root)
    expected = "not a folder" if case == "missing" else "no image with its .mat"
    if case == "missing":  # once through the command: one line, exit 2
        line = _user_error(_build(config, out))
        assert str(root) in line and expected in line
    with pytest.raises(UserError, match=expected):
        build_shards(config, out, workers=0)
    assert not out.exists()


def test_out_that_is_a_file_is_a_user_error(aflw2000_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _copy(GOOD[0], aflw2000_dir, src)
    out = tmp_path / "out"
    out.write_text("a file")
    with pytest.raises(UserError, match="exists and is not a folder"):
        build_shards(_config(tmp_path, src), out, workers=0)
    assert out.read_text() == "a file"


BAD_CONFIGS = {
    "list": "- name: x\n- sources: []\n",
    "scalar": "42\n",
    "malformed": "name: [unclosed\n",
    "seed": "name: x\nsources: [{kind: aflw2000_3d, root: aflw2000_3d}]\nseed: -5\n",
    "inf_shard_size": "name: x\nsources: [{kind: aflw2000_3d, root: aflw2000_3d}]\nshard_size_mb: .inf\n",
    "zero_shard_size": "name: x\nsources: [{kind: aflw2000_3d, root: aflw2000_3d}]\nshard_size_mb: 0\n",
    "nan_fraction": "name: x\nsources: [{kind: aflw2000_3d, root: aflw2000_3d}]\nval_fraction: .nan\n",
    "inf_copies": "name: x\nsources: [{kind: aflw2000_3d, root: aflw2000_3d}]\naugmentation: {copies_per_image: .inf}\n",
    "reject_fraction": "name: x\nsources: [{kind: aflw2000_3d, root: aflw2000_3d}]\nmax_reject_fraction: 1.5\n",
    "pixels": "name: x\nsources: [{kind: aflw2000_3d, root: aflw2000_3d}]\nmax_image_pixels: 0\n",
}


@pytest.mark.parametrize("case", [*BAD_CONFIGS, "binary", "missing"])
def test_a_bad_mix_config_is_a_user_error(case: str, tmp_path: Path) -> None:
    path = tmp_path / "mix.yaml"
    if case == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif case != "missing":
        path.write_text(BAD_CONFIGS[case])
    with pytest.raises(UserError, match=str(path)):
        load_mix(path)


@pytest.mark.parametrize("case", ["list", "seed"])
def test_the_cli_gives_a_bad_config_one_line_and_exit_2(case: str, tmp_path: Path) -> None:
    path = tmp_path / "mix.yaml"
    path.write_text(BAD_CONFIGS[case])
    line = _user_error(_build(path, tmp_path / "out"))
    assert str(path) in line
    assert not (tmp_path / "out").exists()


def test_a_source_listed_twice_collides_and_fails_with_a_summary(aflw2000_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for stem in GOOD[:2]:
        _copy(stem, aflw2000_dir, src)
    config = _config(tmp_path, src)
    mix = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**mix, "sources": mix["sources"] * 2}))
    with pytest.raises(RejectionRateError, match=r"aflw2000_3d: 2 of 4 inputs rejected \(50%\)"):
        build_shards(config, tmp_path / "out", workers=0)
    rows = pq.read_table(tmp_path / "out" / "rejections" / "rejected.parquet").to_pylist()
    assert [r["reason"].split(" is also made from ")[0] for r in rows] == [
        f"key collision: aflw2000_3d_{stem}" for stem in GOOD[:2]
    ]


def test_the_pixel_limit_is_configurable(aflw2000_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for stem in GOOD[:2]:
        _copy(stem, aflw2000_dir, src)
    summary = build_shards(_config(tmp_path, src, max_image_pixels=450 * 450 - 1, max_reject_fraction=1.0),
                           tmp_path / "out", workers=0)  # fmt: skip
    assert summary.samples == 0 and summary.inputs["aflw2000_3d"] == {"inputs": 2, "accepted": 0, "rejected": 2, "surplus": 0}
    reasons = {r["reason"] for r in pq.read_table(tmp_path / "out" / "rejections" / "rejected.parquet").to_pylist()}
    assert reasons == {"image too large: header declares 450x450 pixels > max_image_pixels 202499 (not decoded)"}


def test_a_sample_that_cannot_be_encoded_is_rejected(aflw2000_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import pipelines.samples

    src = tmp_path / "src"
    src.mkdir()
    for stem in GOOD[:3]:
        _copy(stem, aflw2000_dir, src)
    encode, calls = pipelines.samples.encode_jpeg, []

    def failing_once(crop: np.ndarray, quality: int) -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("JPEG encoding failed")
        return encode(crop, quality)

    monkeypatch.setattr(pipelines.samples, "encode_jpeg", failing_once)
    summary = build_shards(_config(tmp_path, src, max_reject_fraction=0.5), tmp_path / "out", workers=0)
    assert summary.samples == 2 and summary.inputs["aflw2000_3d"] == {"inputs": 3, "accepted": 2, "rejected": 1, "surplus": 0}
    (row,) = pq.read_table(tmp_path / "out" / "rejections" / "rejected.parquet").to_pylist()
    assert (row["stage"], row["error"], row["reason"]) == ("encode", "RuntimeError", "RuntimeError: JPEG encoding failed")
    assert verify_shard_set(tmp_path / "out") == []
