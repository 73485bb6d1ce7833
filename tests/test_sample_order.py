"""The canonical sample order: a pure function of (seed, epoch, shard sizes), a real reshuffle every epoch, ranks
that take their part of it, and resume that is exact on another world size or with the other loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from r3fa.loaders import create_loader
from r3fa.loaders.order import SHUFFLES, RankSlice, epoch_order
from r3fa.loaders.shardset import SampleReader, read_shards

SIZES = [50, 20, 37, 64]


@pytest.mark.parametrize("shuffle", sorted(SHUFFLES))
def test_order_is_a_pure_permutation_that_changes_every_epoch(shuffle: str) -> None:
    a = epoch_order(SIZES, seed=1, epoch=0, shuffle=shuffle, block_size=16)
    assert np.array_equal(np.sort(a), np.arange(sum(SIZES)))
    assert np.array_equal(a, epoch_order(SIZES, seed=1, epoch=0, shuffle=shuffle, block_size=16))
    assert not np.array_equal(a, epoch_order(SIZES, seed=1, epoch=1, shuffle=shuffle, block_size=16))
    assert not np.array_equal(a, epoch_order(SIZES, seed=2, epoch=0, shuffle=shuffle, block_size=16))
    with pytest.raises(ValueError, match="unknown shuffle"):
        epoch_order(SIZES, 1, 0, shuffle="buffer")


def test_global_shuffle_moves_samples_across_the_whole_epoch() -> None:
    a, b = (epoch_order([20000] * 10, seed=0, epoch=e) for e in (0, 1))
    where_b = np.empty_like(b)
    where_b[b] = np.arange(len(b))
    rho = np.corrcoef(np.arange(len(a)), where_b[a])[0, 1]
    assert abs(rho) < 0.02  # an ideal permutation: |rho| ~ 1 / sqrt(N)


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_concatenated_give_the_canonical_order_back(world_size: int, drop_last: bool) -> None:
    total, batch, start = 83, 4, 10
    parts = [RankSlice(total, start, batch, r, world_size, drop_last) for r in range(world_size)]
    assert len({p.steps for p in parts}) == 1
    served = [n for step in range(parts[0].steps) for p in parts for n in range(*p.positions(step))]
    global_batch = batch * world_size
    end = start + (total - start) // global_batch * global_batch if drop_last else total
    assert served == list(range(start, end))
    if drop_last:
        assert all(p.positions(s)[1] - p.positions(s)[0] == batch for p in parts for s in range(p.steps))
    assert parts[0].consumed_after(2) == start + 2 * global_batch


def test_a_partial_last_batch_is_split_evenly_and_may_leave_a_rank_empty() -> None:
    # 17 samples, 2 ranks of 8: one full global batch would need 16, so drop_last gives 1 step and drops 1
    assert [RankSlice(17, 0, 8, r, 2, True).steps for r in (0, 1)] == [1, 1]
    keep = [RankSlice(17, 0, 8, r, 2, False) for r in (0, 1)]
    assert [p.steps for p in keep] == [2, 2]
    assert [p.positions(1) for p in keep] == [(16, 16), (16, 17)]
    with pytest.raises(ValueError, match="start_sample"):
        RankSlice(17, 18, 8, 0, 2, True)
    with pytest.raises(ValueError, match="rank"):
        RankSlice(17, 0, 8, 2, 2, True)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder's test mix (80-87 train samples in 16-sample shards)."""
    from pipelines.build import build_shards
    from r3fa.paths import PROJECT_ROOT

    out = tmp_path_factory.mktemp("shards")
    build_shards(PROJECT_ROOT / "configs" / "mix" / "test.yaml", out, workers=0)
    return out


def _canonical_keys(shard_dir: Path, seed: int, epoch: int) -> list[str]:
    reader = SampleReader(tuple(read_shards(shard_dir, "train")))
    return [reader.key(int(i)) for i in epoch_order(reader.sizes, seed, epoch)]


def _run(shard_dir: Path, kind: str, world_size: int, batch: int, start: int, steps: int | None, drop_last: bool):
    """Keys served by `world_size` ranks from `start` on, in (step, rank) order, and the samples they consumed."""
    ranks = [
        [
            b["keys"]
            for b in create_loader(
                shard_dir, "train", batch, kind=kind, seed=7, epoch=3, start_sample=start, rank=r,
                world_size=world_size, drop_last=drop_last, num_threads=0, augment=True,
            )
        ][:steps]
        for r in range(world_size)
    ]  # fmt: skip
    n_steps = len(ranks[0])
    keys = [k for step in range(n_steps) for rank in ranks for k in rank[step]]
    return keys, start + len(keys)


@pytest.mark.parametrize(
    ("before", "after"),
    [(("torch", 1, 8), ("torch", 2, 4)), (("torch", 2, 4), ("torch", 1, 8)), (("dali", 1, 8), ("torch", 2, 4)),
     (("torch", 2, 4), ("dali", 1, 8)), (("dali", 2, 4), ("dali", 4, 2))],
)  # fmt: skip
@pytest.mark.parametrize("drop_last", [True, False])
def test_a_resumed_epoch_on_another_world_size_or_loader_sees_each_remaining_sample_once(
    shard_dir: Path, before: tuple, after: tuple, drop_last: bool
) -> None:
    canonical = _canonical_keys(shard_dir, seed=7, epoch=3)
    first, consumed = _run(shard_dir, *before, start=0, steps=3, drop_last=drop_last)
    second, _ = _run(shard_dir, *after, start=consumed, steps=None, drop_last=drop_last)
    assert consumed == 24
    # global batch 8 on both sides: the dropped tail is that of an uninterrupted run
    expected = canonical[: len(canonical) // 8 * 8] if drop_last else canonical
    assert first + second == expected
    uninterrupted, _ = _run(shard_dir, before[0], before[1], before[2], start=0, steps=None, drop_last=drop_last)
    assert uninterrupted == expected


def test_resumed_batches_carry_the_same_jitter_whatever_the_world_size(shard_dir: Path) -> None:
    common = dict(kind="torch", seed=7, epoch=3, augment=True, num_threads=0)
    one = list(create_loader(shard_dir, "train", 8, **common))
    two = list(create_loader(shard_dir, "train", 4, start_sample=16, rank=1, world_size=2, **common))
    # step 0 of rank 1 from sample 16 = positions 20..23 = the second half of the single rank's third batch
    assert two[0]["positions"] == one[2]["positions"][4:] == [20, 21, 22, 23]
    assert two[0]["keys"] == one[2]["keys"][4:]
    assert np.array_equal(two[0]["image"].numpy(), one[2]["image"][4:].numpy())
