"""Both training loaders over shards made by the builder: same batches (keys in the canonical order), labels as
stored, images within the JPEG decoders' tolerance (online jitter included), deterministic order, exact resume,
and ranks that split an epoch without overlap."""

from __future__ import annotations

import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
import torch

from r3fa import loaders
from r3fa.loaders import create_loader
from r3fa.loaders.jitter import OnlineJitter
from r3fa.loaders.shardset import read_shards
from r3fa.loaders.dali import DaliLoader
from r3fa.loaders.torch_loader import TorchLoader

KINDS = ["dali", "torch"]
# DALI's CPU decoder and OpenCV both use libjpeg-turbo: measured identical (0.0) on the builder's shards.
# The bound (per image, 0-255 units) leaves room for libjpeg builds that round differently; it is not nvJPEG's:
# on an H200 (bench/decode_agreement.py, docs/benchmarks.md) nvJPEG differs by 0.77 on average, up to 3.65 for an
# image's mean and 99 for a pixel. This suite runs DALI on the CPU only.
MEAN_ABS_TOL = 1.5
MAX_ABS_TOL = 20.0
# The online jitter on identical decoded pixels (CPU here): float32 rounding only (measured max 1e-4).
JITTER_ABS_TOL = 0.05


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder's test mix (about 80 train and 40 val samples, 16 a shard), built once (a few seconds)."""
    from pipelines.build import build_shards
    from r3fa.paths import PROJECT_ROOT

    out = tmp_path_factory.mktemp("shards")
    build_shards(PROJECT_ROOT / "configs" / "mix" / "test.yaml", out, workers=0)
    return out


@pytest.fixture(scope="session")
def rows(shard_dir: Path) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Parquet rows by split and key, read with pyarrow (not the builder's reader)."""
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    files = [shard_dir / entry["parquet"] for entry in manifest["shards"]]
    table = pads.dataset(files, format="parquet").to_table(
        columns=["key", "split", "params", "landmarks"]
    )
    out: dict[str, dict] = {"train": {}, "val": {}}
    for key, split, params, lms in zip(*(table.column(c).to_pylist() for c in ("key", "split", "params", "landmarks"))):
        out[split][key] = {"params": np.asarray(params, np.float32), "landmarks": np.asarray(lms, np.float32)}
    return out


def _epoch(shard_dir: Path, kind: str, split: str = "train", **kwargs) -> list[dict]:
    return list(create_loader(shard_dir, split, kwargs.pop("batch_size", 8), kind=kind, **kwargs))


def _by_key(batches: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for b in batches:
        for i, key in enumerate(b["keys"]):
            assert key not in out, f"{key} twice in one epoch"
            out[key] = {f: b[f][i].numpy() for f in ("image", "params", "landmarks")}
    return out


@pytest.fixture(scope="session")
def full_epochs(shard_dir: Path) -> dict[tuple[str, str], dict[str, dict[str, np.ndarray]]]:
    """Every sample of each split through each loader, by (kind, split) and key."""
    return {
        (kind, split): _by_key(_epoch(shard_dir, kind, split, drop_last=False))
        for kind in KINDS
        for split in ("train", "val")
    }


def test_both_loaders_serve_the_same_batches(shard_dir: Path, rows) -> None:
    keys = {kind: [b["keys"] for b in _epoch(shard_dir, kind, seed=4, epoch=2)] for kind in KINDS}
    assert keys["dali"] == keys["torch"] and len(keys["dali"]) == len(rows["train"]) // 8


@pytest.mark.parametrize("spec", [OnlineJitter(), OnlineJitter(blur_prob=1.0, noise_prob=1.0)])
def test_online_jitter_is_the_same_maths_in_both_loaders(shard_dir: Path, spec: OnlineJitter) -> None:
    dali, fallback = (_epoch(shard_dir, kind, augment=spec, seed=2, epoch=0, drop_last=False) for kind in KINDS)
    plain = _epoch(shard_dir, "torch", seed=2, epoch=0, drop_last=False)
    for a, b, p in zip(dali, fallback, plain, strict=True):
        assert a["keys"] == b["keys"] == p["keys"]
        assert (a["image"] - b["image"]).abs().max() * 128 < JITTER_ABS_TOL
        assert (a["image"] - p["image"]).abs().amax(dim=(1, 2, 3)).min() * 128 > 1.0  # the jitter did act


def test_both_loaders_yield_every_sample_once_with_stored_labels(full_epochs, rows) -> None:
    for (kind, split), samples in full_epochs.items():
        assert set(samples) == set(rows[split]), (kind, split)
        for key, sample in samples.items():
            # bit-identical: compare the bytes, not the values
            assert sample["params"].tobytes() == rows[split][key]["params"].tobytes(), (kind, key)
            assert sample["landmarks"].tobytes() == rows[split][key]["landmarks"].tobytes(), (kind, key)


@pytest.mark.parametrize("split", ["train", "val"])
def test_images_agree_within_jpeg_decoder_tolerance(full_epochs, split: str) -> None:
    dali, fallback = full_epochs["dali", split], full_epochs["torch", split]
    for key in dali:
        a, b = dali[key]["image"], fallback[key]["image"]
        assert a.shape == b.shape == (3, 120, 120) and a.dtype == b.dtype == np.float32
        diff = np.abs(a - b) * 128.0
        assert diff.mean() < MEAN_ABS_TOL and diff.max() < MAX_ABS_TOL, (key, diff.mean(), diff.max())
    image = next(iter(dali.values()))["image"]
    assert -1.0 <= image.min() and image.max() <= 1.0  # (x - 127.5) / 128


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x["keys"] == y["keys"] and all(torch.equal(x[f], y[f]) for f in ("image", "params", "landmarks"))
        for x, y in zip(a, b)
    )


@pytest.mark.parametrize("kind", KINDS)
def test_order_is_deterministic_per_seed_and_epoch_and_resumes_exactly(shard_dir: Path, kind: str) -> None:
    first = _epoch(shard_dir, kind, seed=3, epoch=1, augment=True)
    assert len(first) == len(create_loader(shard_dir, "train", 8, kind=kind)) > 3
    assert _same(first, _epoch(shard_dir, kind, seed=3, epoch=1, augment=True))
    assert _same(first[3:], _epoch(shard_dir, kind, seed=3, epoch=1, augment=True, start_sample=24))
    assert _epoch(shard_dir, kind, seed=3, epoch=1, start_sample=8 * len(first)) == []
    other = _epoch(shard_dir, kind, seed=3, epoch=2, augment=True)
    assert [b["keys"] for b in other] != [b["keys"] for b in first]
    plain = _epoch(shard_dir, kind, seed=3, epoch=1)
    assert [b["keys"] for b in plain] == [b["keys"] for b in first]  # augmentation never changes the order
    assert not torch.equal(plain[0]["image"], first[0]["image"])
    assert torch.equal(plain[0]["params"], first[0]["params"])


def test_fallback_order_does_not_depend_on_the_number_of_workers(shard_dir: Path) -> None:
    assert _same(_epoch(shard_dir, "torch", num_threads=0), _epoch(shard_dir, "torch", num_threads=2))


def test_auto_picks_the_fallback_without_dali(shard_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(create_loader(shard_dir, "train", 8), DaliLoader)
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # `import nvidia.dali` now raises ImportError
    assert not loaders.dali_available()
    assert isinstance(create_loader(shard_dir, "train", 8), TorchLoader)
    assert isinstance(create_loader(shard_dir, "train", 8, kind="torch"), TorchLoader)
    with pytest.raises(ValueError, match="unknown loader kind"):
        create_loader(shard_dir, "train", 8, kind="nvjpeg")


def _rank_epoch(args: tuple[str, str, int, int, bool]) -> tuple[int, list[list[str]]]:
    """One rank's epoch in its own (spawned) process: (len(loader), keys per batch)."""
    shard_dir, kind, rank, world_size, drop_last = args
    loader = create_loader(
        Path(shard_dir), "train", 8, kind=kind, seed=5, epoch=1, rank=rank, world_size=world_size, drop_last=drop_last
    )
    return len(loader), [b["keys"] for b in loader]


@pytest.mark.parametrize("kind", KINDS)
def test_two_ranks_cover_every_sample_exactly_once(shard_dir: Path, rows, kind: str) -> None:
    jobs = [(str(shard_dir), kind, rank, 2, drop_last) for drop_last in (False, True) for rank in (0, 1)]
    # not multiprocessing.Pool: its daemonic workers cannot start the fallback's DataLoader workers
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        (len0, keys0), (len1, keys1), (dlen0, dkeys0), (dlen1, dkeys1) = list(pool.map(_rank_epoch, jobs))
    assert len0 == len1 == len(keys0) == len(keys1)
    seen = [k for batch in keys0 + keys1 for k in batch]
    assert sorted(seen) == sorted(rows["train"])
    assert dlen0 == dlen1 == len(dkeys0) == len(dkeys1) == (len(rows["train"]) // 2) // 8
    assert all(len(b) == 8 for b in dkeys0 + dkeys1)
    assert not set(sum(dkeys0, [])) & set(sum(dkeys1, []))


def test_shard_list_comes_from_the_manifest(shard_dir: Path, rows) -> None:
    shards = read_shards(shard_dir, "train")
    assert sum(s.count for s in shards) == len(rows["train"])
    assert all(s.tar.exists() and s.index.exists() for s in shards)
    assert read_shards(shard_dir, "no-such-split") == []


def test_ranks_get_the_same_samples_from_either_loader_and_equal_steps(shard_dir: Path, rows) -> None:
    n = len(rows["train"])
    per_kind = {}
    for kind in KINDS:
        # 28 samples before the end on 3 ranks of 9: one full global batch, then 1 sample -> ranks 0-1 get 0
        tail = [
            list(create_loader(shard_dir, "train", 9, kind=kind, rank=r, world_size=3, drop_last=False, start_sample=n - 28))
            for r in range(3)
        ]
        assert [[len(b["keys"]) for b in rank] for rank in tail] == [[9, 0], [9, 0], [9, 1]]
        assert tail[0][-1]["image"].shape == (0, 3, 120, 120)
        ranks = [create_loader(shard_dir, "train", 9, kind=kind, rank=r, world_size=3, drop_last=False) for r in range(3)]
        batches = [list(loader) for loader in ranks]
        assert [len(loader) for loader in ranks] == [len(b) for b in batches] == [-(-n // 27)] * 3
        per_kind[kind] = [[k for b in rank for k in b["keys"]] for rank in batches]
    assert per_kind["dali"] == per_kind["torch"]
    seen = sum(per_kind["dali"], [])
    assert sorted(seen) == sorted(rows["train"])


def test_fallback_workers_survive_a_prefect_flow_in_the_same_process(shard_dir: Path, rows) -> None:
    """Training flows run the loader inside Prefect: its after-fork state must not kill forked workers."""
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    @flow
    def one_step() -> int:
        return len(_epoch(shard_dir, "torch", num_threads=2))

    with prefect_test_harness(server_startup_timeout=60):
        inside = one_step()
    after = _by_key(_epoch(shard_dir, "torch", num_threads=2))
    assert inside == len(create_loader(shard_dir, "train", 8, kind="torch"))
    assert set(after) <= set(rows["train"]) and len(after) == inside * 8
