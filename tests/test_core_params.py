"""The 62-d parameter layout: Euler angles in the 300W-LP convention, pose from labels, whitening."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from r3fa.crop import CropConvention, roi_from_landmarks
from r3fa.io import read_annotation, read_image
from r3fa.labels import crop_frame_params, image_frame_affine
from r3fa.params import (
    PARAM_DIM,
    Whitening,
    euler_from_rotation,
    load_whitening,
    pose_degrees,
    rotation_from_euler,
)


def _random_angles(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pitch_roll = rng.uniform(-np.pi, np.pi, size=(n, 2))
    yaw = rng.uniform(-np.pi / 2 + 1e-3, np.pi / 2 - 1e-3, size=n)
    return np.stack([pitch_roll[:, 0], yaw, pitch_roll[:, 1]], axis=1)


def test_rotation_matches_face3d_convention() -> None:
    """R = Rx Ry Rz with transposed factors, i.e. R.T = Rz(roll) Ry(yaw) Rx(pitch) (textbook, intrinsic ZYX)."""
    for pitch, yaw, roll in _random_angles(50):
        expected = Rotation.from_euler("ZYX", [roll, yaw, pitch]).as_matrix().T
        np.testing.assert_allclose(rotation_from_euler(pitch, yaw, roll), expected, atol=1e-12)


def test_euler_round_trip_single_and_batched() -> None:
    angles = _random_angles(200, seed=1)
    rotations = np.stack([rotation_from_euler(*a) for a in angles])
    identity = np.broadcast_to(np.eye(3), rotations.shape)
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", rotations, rotations), identity, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-12)
    batched = euler_from_rotation(rotations)
    assert batched.shape == (200, 3)
    np.testing.assert_allclose(batched, angles, atol=1e-9)
    np.testing.assert_allclose(euler_from_rotation(rotations[7]), angles[7], atol=1e-9)
    # any leading batch shape
    grid = euler_from_rotation(rotations.reshape(10, 20, 3, 3))
    np.testing.assert_allclose(grid, angles.reshape(10, 20, 3), atol=1e-9)


@pytest.mark.parametrize("convention", list(CropConvention))
def test_pose_degrees_of_aflw_labels_equal_pose_para(aflw2000_dir: Path, convention: CropConvention) -> None:
    """pose_degrees of the crop-frame label of an AFLW2000-3D file gives back the file's own Pose_Para angles."""
    checked = 0
    for mat in sorted(aflw2000_dir.glob("image*.mat"))[::10]:
        ann = read_annotation(mat)
        pitch, yaw, roll = np.degrees(ann.pose_para[:3])
        if abs(yaw) >= 89.0:  # pitch and roll are not identifiable at the gimbal lock
            continue
        height = read_image(mat.with_suffix(".jpg")).shape[0]
        roi = roi_from_landmarks(ann.pt3d_68)
        affine = image_frame_affine(ann.pose_para, height)
        label = crop_frame_params(affine, ann.shape_para, ann.exp_para, roi, convention)
        assert label.shape == (PARAM_DIM,) and label.dtype == np.float32
        np.testing.assert_allclose(pose_degrees(label), [pitch, yaw, roll], atol=0.02)  # float32 label
        checked += 1
    assert checked >= 190


def test_pose_degrees_is_batched() -> None:
    angles = _random_angles(5, seed=2)
    params = np.zeros((5, PARAM_DIM))
    for p, a, scale in zip(params, angles, [0.5, 1e-3, 2.0, 7.0, 1.0]):
        p[:12] = np.concatenate([scale * rotation_from_euler(*a), [[1.0], [2.0], [3.0]]], axis=1).reshape(-1)
    np.testing.assert_allclose(pose_degrees(params), np.degrees(angles), atol=1e-7)


@pytest.mark.parametrize(
    "name, mean_file, std_file",
    [("v1", "param_mean.txt", "param_std.txt"), ("v2", "param_mean_v2.txt", "param_std_v2.txt")],
)
def test_published_whitening_matches_the_reference_text_files(data_root: Path, name, mean_file, std_file) -> None:
    whitening = load_whitening(name)
    assert whitening.name == name
    assert whitening.mean.shape == (62,) and whitening.std.shape == (62,)
    weights = data_root / "3ddfa" / "c++" / "weights"
    np.testing.assert_allclose(whitening.mean, np.loadtxt(weights / mean_file), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whitening.std, np.loadtxt(weights / std_file), rtol=1e-5, atol=1e-6)
    assert (whitening.std > 0).all()


def test_v1_and_v2_statistics_differ() -> None:
    assert not np.allclose(load_whitening("v1").mean, load_whitening("v2").mean)


def test_unknown_whitening_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown whitening"):
        load_whitening("v3")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["v1", "v2"])
def test_whitening_round_trip_numpy_and_torch(name: str) -> None:
    whitening = load_whitening(name)
    rng = np.random.default_rng(3)
    params = (whitening.mean + rng.standard_normal((16, 62)) * whitening.std).astype(np.float32)
    normalised = whitening.whiten(params)
    assert normalised.dtype == np.float32
    assert np.abs(normalised).max() < 10  # the statistics make typical labels O(1)
    np.testing.assert_allclose(whitening.unwhiten(normalised), params, rtol=1e-5, atol=1e-3)
    tensor = torch.from_numpy(params.astype(np.float64))
    np.testing.assert_allclose(whitening.whiten(tensor).numpy(), whitening.whiten(params.astype(np.float64)), atol=1e-9)
    np.testing.assert_allclose(whitening.unwhiten(whitening.whiten(tensor)).numpy(), params, rtol=1e-6, atol=1e-4)
    again = Whitening.from_dict(whitening.to_dict())
    assert again.name == name
    np.testing.assert_array_equal(again.mean, whitening.mean)
    np.testing.assert_array_equal(again.std, whitening.std)


def test_whitening_fit_on_real_labels(aflw2000_dir: Path) -> None:
    labels = []
    for mat in sorted(aflw2000_dir.glob("image*.mat"))[:200]:
        ann = read_annotation(mat)
        roi = roi_from_landmarks(ann.pt3d_68)
        affine = image_frame_affine(ann.pose_para, 450)
        labels.append(crop_frame_params(affine, ann.shape_para, ann.exp_para, roi, CropConvention.V1))
    labels = np.stack(labels).astype(np.float64)
    labels[:, 3] = 5.0  # a constant dimension gets std 1, not a division by zero
    fitted = Whitening.fit(labels, name="aflw-sample")
    assert fitted.name == "aflw-sample" and fitted.mean.shape == fitted.std.shape == (62,)
    np.testing.assert_allclose(fitted.mean, labels.mean(axis=0), rtol=1e-5)
    assert fitted.std[3] == 1.0
    normalised = fitted.whiten(labels)
    varying = np.arange(62) != 3
    np.testing.assert_allclose(normalised[:, varying].mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalised[:, varying].std(axis=0), 1.0, rtol=1e-4)
