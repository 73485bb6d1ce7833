"""Crop geometry: image <-> crop through a roi, the two crop-frame conventions, the roi rules, the crop itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from r3fa.crop import (
    CROP_SIZE,
    CropConvention,
    crop_image,
    crop_to_image,
    image_to_crop,
    roi_from_box,
    roi_from_landmarks,
)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("dims", [2, 3])
def test_image_to_crop_and_back_are_inverse(dims: int) -> None:
    points = RNG.uniform(-50, 500, size=(4, dims, 68))
    rois = np.array([[10.0, 20.0, 130.0, 140.0], [0.5, 0.25, 300.5, 300.25], [100, 50, 160, 170], [-40, -30, 600, 610]])
    crop = image_to_crop(points, rois)
    np.testing.assert_allclose(crop_to_image(crop, rois), points, atol=1e-9)
    np.testing.assert_allclose(image_to_crop(crop_to_image(points, rois), rois), points, atol=1e-9)
    # the roi's corners go to the crop's corners, and z scales by the mean of the two scales
    corners = np.array([[10.0, 130.0], [20.0, 140.0], [1.0, 1.0]])[:dims]
    np.testing.assert_allclose(image_to_crop(corners, rois[0])[:2], [[0, CROP_SIZE], [0, CROP_SIZE]])
    if dims == 3:
        non_square = np.array([0.0, 0.0, 60.0, 240.0])  # x scale 0.5, y scale 2 -> z scale 1.25
        np.testing.assert_allclose(crop_to_image(np.array([[0.0], [0.0], [4.0]]), non_square)[2], [5.0])
    assert crop.shape == points.shape


MODEL_POINTS = np.array([[0.0, 10.0, 60.5], [0.0, 20.0, 119.0], [0.0, -3.0, 7.5]])  # columns are points x, y, z


def test_v1_offsets_are_3ddfa_benchmark() -> None:
    """3DDFA v1 (its benchmark): y -> 121 - y, x and z unchanged (DESIGN §2)."""
    expected = np.array([[0.0, 10.0, 60.5], [121.0, 101.0, 2.0], [0.0, -3.0, 7.5]])
    np.testing.assert_array_equal(CropConvention.V1.model_to_crop(MODEL_POINTS), expected)


def test_v2_offsets_are_3ddfa_v2() -> None:
    """3DDFA-V2 (`similar_transform`): x -> x - 1, y -> 120 - y, z -> z - 1 (DESIGN §2 gives x and y)."""
    expected = np.array([[-1.0, 9.0, 59.5], [120.0, 100.0, 1.0], [-1.0, -4.0, 6.5]])
    np.testing.assert_array_equal(CropConvention.V2.model_to_crop(MODEL_POINTS), expected)


def test_conventions_differ_by_one_pixel_in_x_and_y() -> None:
    diff = CropConvention.V1.model_to_crop(MODEL_POINTS[:2]) - CropConvention.V2.model_to_crop(MODEL_POINTS[:2])
    np.testing.assert_array_equal(diff, np.ones_like(diff))


@pytest.mark.parametrize("convention", list(CropConvention))
def test_model_to_crop_and_back_are_inverse_numpy_and_torch(convention: CropConvention) -> None:
    for dims in (2, 3):
        points = RNG.uniform(-100, 200, size=(5, dims, 68))
        np.testing.assert_allclose(convention.crop_to_model(convention.model_to_crop(points)), points, atol=1e-12)
        np.testing.assert_allclose(convention.model_to_crop(convention.crop_to_model(points)), points, atol=1e-12)
        tensor = torch.from_numpy(points)
        np.testing.assert_allclose(convention.model_to_crop(tensor).numpy(), convention.model_to_crop(points))
        back = convention.crop_to_model(convention.model_to_crop(tensor))
        np.testing.assert_allclose(back.numpy(), points, atol=1e-12)


def test_conventions_are_named() -> None:
    assert CropConvention("3ddfa_v1") is CropConvention.V1 and CropConvention("3ddfa_v2") is CropConvention.V2


def test_roi_from_landmarks_is_the_diagonal_of_the_max_side_square() -> None:
    points = np.array([[10.0, 50.0, 30.0, 12.0], [20.0, 100.0, 60.0, 99.0]])  # box x 10..50, y 20..100
    side = 80.0 * np.sqrt(2.0)  # max(w=40, h=80), then its diagonal
    expected = [30 - side / 2, 60 - side / 2, 30 + side / 2, 60 + side / 2]
    np.testing.assert_allclose(roi_from_landmarks(points), expected)
    roi = roi_from_landmarks(RNG.uniform(0, 400, size=(3, 68)))  # 3D points: z ignored
    assert roi[2] - roi[0] == pytest.approx(roi[3] - roi[1])


def test_roi_from_box_hand_computed() -> None:
    # w = 100, h = 150: old size 125, centre (150, 175 + 0.14 * 125 = 192.5), side int(1.58 * 125) = 197
    np.testing.assert_allclose(roi_from_box(np.array([100.0, 100.0, 200.0, 250.0])), [51.5, 94.0, 248.5, 291.0])
    # a detector row with a score (ignored): w = 60, h = 63, old 61.5, centre (40, 51.5 + 8.61), side int(97.17) = 97
    np.testing.assert_allclose(roi_from_box(np.array([10.0, 20.0, 70.0, 83.0, 0.99])), [-8.5, 11.61, 88.5, 108.61])


@pytest.mark.parametrize(
    "roi",
    [
        [100.3, 80.7, 160.3, 140.7],  # enlarging (60 px -> 120)
        [50.5, 20.25, 350.5, 320.25],  # shrinking (300 px -> 120)
        [0.0, 0.0, 240.0, 240.0],
        [90.0, 60.0, 190.0, 240.0],  # not square
    ],
)
def test_crop_image_puts_a_dot_where_image_to_crop_says(roi: list[float]) -> None:
    x0, y0 = 131.0, 111.0
    yy, xx = np.mgrid[:400, :400]
    image = np.zeros((400, 400, 3), np.uint8)
    image[..., 1] = np.round(255 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 4.0**2)))
    crop = crop_image(image, np.array(roi))
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3) and crop.dtype == np.uint8
    assert crop[..., [0, 2]].max() == 0  # channels stay in place
    weights = crop[..., 1].astype(np.float64)
    rows, cols = np.mgrid[:CROP_SIZE, :CROP_SIZE]
    centroid = [(weights * cols).sum() / weights.sum(), (weights * rows).sum() / weights.sum()]
    predicted = image_to_crop(np.array([[x0], [y0]]), np.array(roi))[:, 0]
    np.testing.assert_allclose(centroid, predicted, atol=0.05)


def test_crop_outside_the_image_is_black() -> None:
    image = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_image(image, np.array([-100.0, -100.0, 100.0, 100.0]))  # the image fills the lower-right quarter
    assert crop[:55, :55].max() == 0 and crop[65:, 65:].min() == 200


def test_crop_image_reproduces_the_official_aflw2000_3d_crops(data_root) -> None:
    """The benchmark's 120x120 crops were cut with `AFLW2000-3D_crop.roi_box.npy`; ours match them.

    Only square boxes (the 54 clipped ones were cut before clipping). Measured on every 10th: mean absolute
    difference median 2.8 grey levels, max 5.8 (JPEG and resampling); a shift of one crop pixel is worse.
    """
    import cv2

    names = (data_root / "aflw2000_3d_crop" / "AFLW2000-3D_crop.list").read_text().split()
    rois = np.load(data_root / "3ddfa" / "test.configs" / "AFLW2000-3D_crop.roi_box.npy")
    square = np.flatnonzero(np.isclose(rois[:, 2] - rois[:, 0], rois[:, 3] - rois[:, 1]))
    assert len(names) == 2000 and len(square) == 2000 - 54
    diffs, shifted = [], []
    for i in square[::20]:
        image = cv2.imread(str(data_root / "aflw2000_3d" / names[i]))
        official = cv2.imread(str(data_root / "aflw2000_3d_crop" / names[i])).astype(np.float64)
        diffs.append(np.abs(crop_image(image, rois[i]) - official).mean())
        one_pixel = (rois[i, 2] - rois[i, 0]) / CROP_SIZE
        shifted.append(np.abs(crop_image(image, rois[i] + one_pixel * np.array([1, 1, 1, 1])) - official).mean())
    assert np.median(diffs) < 3.5 and max(diffs) < 8.0
    assert np.median(shifted) > np.median(diffs) + 1.0


def test_image_to_crop_reproduces_the_official_crop_landmarks(data_root) -> None:
    """`list_landmarks_align_AFLW2000_3D_crop_pts_xgtu_68.txt` holds pt3d_68 in the official crops' frame."""
    text = (data_root / "aflw2000_3d_crop" / "list_landmarks_align_AFLW2000_3D_crop_pts_xgtu_68.txt").read_text()
    rows = [[value for value in line.split(",") if value] for line in text.split()]  # name, x0, y0, x1, y1, ...
    names = (data_root / "aflw2000_3d_crop" / "AFLW2000-3D_crop.list").read_text().split()
    assert [row[0] for row in rows] == names
    official = np.array([row[1:] for row in rows], np.float64).reshape(-1, 68, 2).transpose(0, 2, 1)
    configs = data_root / "3ddfa" / "test.configs"
    pt3d = np.load(configs / "AFLW2000-3D.pts68.npy")
    rois = np.load(configs / "AFLW2000-3D_crop.roi_box.npy")
    np.testing.assert_allclose(image_to_crop(pt3d[:, :2], rois), official, atol=1e-3)  # measured 6e-5
