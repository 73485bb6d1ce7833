"""The protocol's arithmetic against values worked out by hand on tiny arrays, and the benchmarks' facts."""

from __future__ import annotations

import numpy as np
import pytest

from r3fa.benchmarks import load_benchmark
from r3fa.metrics import auc, box_normaliser, ced, nme, summarise, yaw_bin


def test_box_normaliser_is_sqrt_of_box_area():
    # box x in [0, 4], y in [0, 9]: sqrt(4 * 9) = 6; a third row (z) is ignored
    pts = np.array([[[0.0, 4.0, 2.0], [0.0, 1.0, 9.0], [100.0, -50.0, 7.0]]])
    assert box_normaliser(pts) == pytest.approx([6.0])


def test_nme_mean_euclidean_error_over_normaliser():
    gt = np.array([[[0.0, 4.0, 0.0], [0.0, 0.0, 3.0]]])
    # errors per point: (3, 4) -> 5, (0, 0) -> 0, (0, -6) -> 6; mean 11/3; normaliser 2
    pred = gt + np.array([[[3.0, 0.0, 0.0], [4.0, 0.0, -6.0]]])
    assert nme(pred, gt, np.array([2.0])) == pytest.approx([11 / 6])
    # the hidden third point leaves the mean (5 + 0) / 2
    visible = np.array([[True, True, False]])
    assert nme(pred, gt, np.array([2.0]), visible) == pytest.approx([1.25])


def test_yaw_bins_edges_belong_to_the_lower_bin():
    yaw = np.array([-30.0, 30.0001, 60.0, -60.5, 0.0, 90.0])
    assert yaw_bin(yaw).tolist() == [0, 1, 1, 2, 0, 2]


def test_summary_mean_and_population_std_of_bin_means():
    # bin 0: 1 %, 3 % -> 2; bin 1: 5 % -> 5; bin 2: 2, 4, 6 % -> 4
    values = np.array([0.01, 0.03, 0.05, 0.02, 0.04, 0.06])
    yaw = np.array([10.0, -20.0, 45.0, 70.0, -80.0, 61.0])
    s = summarise(values, yaw)
    assert s.counts == (2, 1, 3)
    assert s.means == pytest.approx((2.0, 5.0, 4.0))
    assert s.stds == pytest.approx((1.0, 0.0, np.sqrt(8 / 3)))
    assert s.mean == pytest.approx(11 / 3)
    # population std (ddof=0, as 3DDFA's np.std): deviations -5/3, 4/3, 1/3 -> sqrt(42/27)
    assert s.std == pytest.approx(np.sqrt(42 / 27))
    assert s.overall == pytest.approx(3.5)
    assert s.to_dict() == pytest.approx({"0-30": 2.0, "30-60": 5.0, "60-90": 4.0, "mean": 11 / 3, "std": np.sqrt(42 / 27)})


def test_empty_bin_gives_none_in_the_report():
    s = summarise(np.array([0.01, 0.02]), np.array([0.0, 40.0]))
    assert s.counts == (1, 1, 0)
    assert s.to_dict()["60-90"] is None and s.to_dict()["mean"] is None


def test_ced_and_auc_by_hand():
    values = np.array([0.01, 0.02, 0.02, 0.05])
    assert ced(values, np.array([0.0, 0.02, 0.04, 0.1])).tolist() == [0.0, 0.75, 0.75, 1.0]
    # each image adds max(0, 0.07 - e) / 0.07: 1, 0.5, 0, 0 -> 0.375
    assert auc(np.array([0.0, 0.035, 0.07, 0.1])) == pytest.approx(0.375)


def test_aflw2000_bin_counts_and_row_order(data_root):
    bench = load_benchmark("aflw2000-3d")
    assert summarise(np.zeros(len(bench)), bench.yaw).counts == (1312, 383, 305)
    names = (data_root / "aflw2000_3d_crop" / "AFLW2000-3D_crop.list").read_text().split()
    assert list(bench.names) == names == sorted(names)
    assert bench.crops(0, 2).shape == (2, 120, 120, 3)
    clipped = np.abs((bench.rois[:, 2] - bench.rois[:, 0]) - (bench.rois[:, 3] - bench.rois[:, 1])) > 1e-3
    assert clipped.sum() == 54  # used as they are


def test_folds_select_disjoint_rows_with_their_own_hash():
    fold0, fold1 = load_benchmark("aflw2000-3d", fold=0), load_benchmark("aflw2000-3d", fold=1)
    assert len(fold0) == len(fold1) == 1000 and not set(fold0.names) & set(fold1.names)
    assert fold1.selection == "fold 1 of 2" and fold0.dataset_hash != fold1.dataset_hash
    assert fold1.names[0] == load_benchmark("aflw2000-3d").names[1]


def test_ground_truth_scores_zero():
    for name in ("aflw2000-3d", "aflw2000-3d-reannotated"):
        bench = load_benchmark(name)
        assert np.all(nme(bench.gt, bench.gt, bench.normaliser, bench.visible) == 0.0)


def test_aflw_subset_and_the_68_to_21_map(data_root):
    bench = load_benchmark("aflw")
    assert len(bench) == 4500 and summarise(np.zeros(4500), bench.yaw).counts == (1500, 1500, 1500)
    assert bench.visible.sum(axis=1).min() > 0
    # positions: x = index, y = 2 index -> eye centres 38.5 / 44.5, mouth 63.5 (inner lips 60..67)
    pts = np.stack([np.arange(68.0), 2 * np.arange(68.0)])[None]
    mapped = bench.benchmark_points(pts)[0]
    assert mapped.shape == (2, 21)
    assert mapped[0].tolist() == [17, 19, 21, 22, 24, 26, 36, 38.5, 39, 42, 44.5, 45, 2, 31, 30, 35, 14, 48, 63.5, 54, 8]
    # independent check of the map on real annotations: AFLW2000-3D has both the 68-point ground truth and
    # the original AFLW 21 points; mapped, every point agrees to a few percent (a wrong map gives 10-30 %)
    full = load_benchmark("aflw2000-3d")
    pts21 = np.load(data_root / "3ddfa" / "test.configs" / "AFLW2000-3D.pts21.npy").astype(np.float64)
    visible = (pts21[:, 0] != -1) & (pts21[:, 1] != -1)
    per_point = np.linalg.norm(bench.benchmark_points(full.gt) - pts21, axis=1) / full.normaliser[:, None]
    per_point[~visible] = np.nan
    assert np.nanmedian(per_point, axis=0).max() < 0.04


def test_unknown_benchmark_and_bad_indices():
    with pytest.raises(ValueError):
        load_benchmark("300w")
    with pytest.raises(ValueError):
        load_benchmark("aflw2000-3d", np.array([2000]))
    with pytest.raises(ValueError):
        load_benchmark("aflw2000-3d", np.array([0]), fold=0)
