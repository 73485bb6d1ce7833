"""Augmentation keeps the label consistent with the pixels, is seeded, and records what it did.

Consistency is checked by reconstruction on real AFLW2000-3D samples: the 68 landmarks of the augmented
label (bfm68, crop frame) against (a) the annotation's landmarks carried through the same transform and
(b) the original label's landmarks carried through it (exact for rotation/roi jitter; for a flip, mirrored
and permuted, so the only error is the least-squares fit of the mirrored coefficients).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from r3fa.augment import (
    AugmentPolicy,
    BlurOp,
    ColorOp,
    FlipOp,
    JpegOp,
    NoiseOp,
    OcclusionOp,
    RoiJitterOp,
    CopyJob,
    RotateOp,
    augment_copies,
    augment_sample,
    copies_for,
    copy_rng,
    draw_geometry,
    flip_map,
    geometric_map,
    geometric_maps,
    geometric_transform,
    geometric_transforms,
)
from r3fa.labels import landmark_nme, landmarks_in_crop
from r3fa.landmark_symmetry import IBUG68_FLIP, mirror_coefficients
from r3fa.readers import CropTransform, iter_aflw2000, label_landmarks, load_source_sample, make_record, warp_crop
from r3fa.records import DATASET_CONVENTION

OP_NAMES = ("flip", "rotate", "roi_jitter", "color", "occlusion", "blur", "noise", "jpeg")
_OFF = dict(
    flip=FlipOp(p=0), rotate=RotateOp(p=0), roi_jitter=RoiJitterOp(p=0), color=ColorOp(p=0),
    occlusion=OcclusionOp(p=0), blur=BlurOp(p=0), noise=NoiseOp(p=0), jpeg=JpegOp(p=0),
)  # fmt: skip


def only(name: str, **fields) -> AugmentPolicy:
    """A policy that always applies `name` and nothing else (copy 0 augmented too)."""
    ops = dict(_OFF)
    ops[name] = type(_OFF[name])(p=1.0, **fields)
    return AugmentPolicy(include_original=False, **ops)


@pytest.fixture(scope="module")
def samples(aflw2000_dir: Path):
    """Twelve real samples spread over the sorted list (frontal to profile)."""
    items = list(iter_aflw2000(aflw2000_dir))[::167][:12]
    return [(item, load_source_sample(item)) for item in items]


def reconstructed(record, model) -> np.ndarray:
    return landmarks_in_crop(model, record.params, DATASET_CONVENTION)[:2]


def transformed_label_landmarks(base, transform: CropTransform) -> np.ndarray:
    """The original label's landmarks carried through `transform` (permuted when it mirrors)."""
    points = transform.apply(label_landmarks(base.image_affine, base.shape, base.exp))
    return points[:, IBUG68_FLIP] if transform.mirrored else points


@pytest.mark.parametrize(
    ("name", "fields"), [("flip", {}), ("rotate", {"max_deg": 45.0}), ("roi_jitter", {"scale": (0.8, 1.25), "shift": 0.1})]
)
def test_geometric_ops_keep_the_label_on_the_landmarks(samples, bfm68, name: str, fields: dict):
    policy = only(name, **fields)
    label_vs_annotation, label_vs_label = [], []
    for copy_index, (item, base) in enumerate(samples):
        record = augment_sample(base, item, policy, copy_rng(7, item.key, copy_index), copy_index)
        assert [op["name"] for op in record.augment] == [name]
        transform = geometric_transform(base, geometric_map(record.augment))
        assert transform.mirrored == (name == "flip")
        label_vs_annotation.append(record.label_nme - base.label_nme)
        label_vs_label.append(100 * landmark_nme(reconstructed(record, bfm68), transformed_label_landmarks(base, transform)))
        # the record's landmarks are the annotation's, carried through the same transform
        expected = transform.apply(base.landmarks)
        np.testing.assert_allclose(record.landmarks, expected[:, IBUG68_FLIP] if transform.mirrored else expected, atol=1e-3)
    # the augmented label fits the transformed annotation about as well as the original label fits the original
    assert np.mean(label_vs_annotation) < 0.1 and np.max(label_vs_annotation) < 0.25
    if name == "flip":  # only the fit of the mirrored coefficients: 0.20 % median, 0.49 % max over 200 images
        assert np.max(label_vs_label) < 0.6
    else:  # rotation and roi jitter compose exactly into the pose
        assert np.max(label_vs_label) < 1e-4


def test_replayed_log_reproduces_the_crop(samples):
    policy = AugmentPolicy(include_original=False, **{k: v for k, v in _OFF.items() if k not in ("flip", "rotate", "roi_jitter")})
    item, base = samples[3]
    for copy_index in range(4):
        record = augment_sample(base, item, policy, copy_rng(1, item.key, copy_index), copy_index)
        again = make_record(base, item, geometric_transform(base, geometric_map(record.augment)))
        np.testing.assert_array_equal(record.crop, again.crop)


def test_flip_is_the_mirrored_crop_and_mirrors_the_pose(samples):
    item, base = samples[1]
    plain = make_record(base, item)
    flipped = augment_sample(base, item, only("flip"), np.random.default_rng(0), 1)
    # the same sampling positions, mirrored; warpAffine's fixed-point weights may round 1 grey level apart
    difference = np.abs(flipped.crop.astype(int) - cv2.flip(plain.crop, 1))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
    np.testing.assert_allclose(flipped.pose_deg, plain.pose_deg * [1, -1, -1], atol=1e-3)
    scaled_rotation = lambda params: params[:12].reshape(3, 4)[:, :3].astype(np.float64)  # noqa: E731
    np.testing.assert_allclose(np.linalg.svd(scaled_rotation(flipped.params))[1], np.linalg.svd(scaled_rotation(plain.params))[1], rtol=1e-5)
    assert np.linalg.det(scaled_rotation(flipped.params)) > 0  # a proper scaled rotation, not a reflection


def test_flip_twice_is_the_identity(samples, bfm68):
    item, base = samples[2]
    plain = make_record(base, item)
    twice = make_record(base, item, geometric_transform(base, flip_map() @ flip_map()))
    np.testing.assert_array_equal(twice.crop, plain.crop)
    np.testing.assert_allclose(twice.params, plain.params, rtol=1e-5, atol=1e-3)
    # the mirrored-coefficient fit, applied twice, returns the face: offsets mirror back through diag(-1, 1, 1)
    model = bfm68
    shape1, exp1, offset1 = mirror_coefficients(base.shape, base.exp, model)
    shape2, exp2, offset2 = mirror_coefficients(shape1, exp1, model)
    face = lambda s, e: (model.mean + model.shape_basis @ s + model.exp_basis @ e).reshape(-1, 3).T  # noqa: E731
    back = face(shape2, exp2) + (offset2 + offset1 * [-1, 1, 1])[:, None]
    assert 100 * landmark_nme(back[:2], face(base.shape, base.exp)[:2]) < 0.3


@pytest.mark.parametrize("name", ["color", "occlusion", "blur", "noise", "jpeg"])
def test_photometric_ops_change_pixels_not_labels(samples, name: str):
    item, base = samples[0]
    plain = make_record(base, item)
    record = augment_sample(base, item, only(name), np.random.default_rng(3), 1)
    assert [op["name"] for op in record.augment] == [name]
    assert not np.array_equal(record.crop, plain.crop)
    assert record.crop.shape == (120, 120, 3) and record.crop.dtype == np.uint8
    np.testing.assert_array_equal(record.params, plain.params)
    np.testing.assert_array_equal(record.landmarks, plain.landmarks)


def test_the_blur_is_the_gaussian_blur_of_its_logged_sigma(samples):
    """The blur applies its kernel in floating point (`cv2.sepFilter2D`, for speed): within rounding, it is
    OpenCV's `GaussianBlur` of the sigma it logs (kernel size and borders included)."""
    item, base = samples[0]
    plain = make_record(base, item)
    for seed in range(6):
        record = augment_sample(base, item, only("blur"), np.random.default_rng(seed), 1)
        reference = cv2.GaussianBlur(plain.crop, (0, 0), sigmaX=record.augment[0]["sigma"])
        assert np.abs(record.crop.astype(np.int16) - reference).max() <= 1


def test_same_seed_same_bytes_and_a_complete_log(samples):
    policy = AugmentPolicy(**{name: type(_OFF[name])(p=1.0) for name in OP_NAMES}, include_original=False)
    item, base = samples[4]
    first, second = (augment_sample(base, item, policy, copy_rng(11, item.key, 2), 2) for _ in range(2))
    assert first.crop.tobytes() == second.crop.tobytes()
    assert first.params.tobytes() == second.params.tobytes()
    assert first.augment == second.augment
    assert [op["name"] for op in first.augment] == ["roi_jitter", "rotate", "flip", "color", "occlusion", "blur", "noise", "jpeg"]
    json.dumps(first.augment)  # goes into the shard's KEY.json
    other = augment_sample(base, item, policy, copy_rng(12, item.key, 2), 2)
    assert other.crop.tobytes() != first.crop.tobytes()


def test_copy_zero_is_the_original_and_keys_name_the_parent(samples):
    item, base = samples[5]
    policy = AugmentPolicy()
    original = augment_sample(base, item, policy, copy_rng(0, item.key, 0), 0)
    np.testing.assert_array_equal(original.crop, make_record(base, item).crop)
    assert original.augment == () and original.key == f"{item.key}_a0" and original.parent_key == item.key
    copy = augment_sample(base, item, policy, copy_rng(0, item.key, 3), 3)
    assert copy.key == f"{item.key}_a3" and copy.parent_key == item.key and "." not in copy.key


def test_copies_per_image_fractional_part_by_seeded_hash():
    policy = AugmentPolicy()  # 3.512: 122,450 images -> ~430k records
    counts = np.array([copies_for(f"300wlp_AFW_{i}", policy, seed=0) for i in range(20000)])
    assert set(np.unique(counts)) == {3, 4}
    assert counts.mean() == pytest.approx(3.512, abs=0.015)
    assert copies_for("300wlp_AFW_5", policy, seed=0) == counts[5]
    assert {copies_for(f"k{i}", AugmentPolicy(copies_per_image=2), seed=1) for i in range(100)} == {2}


def test_policy_is_validated():
    with pytest.raises(ValidationError):
        AugmentPolicy(flip={"p": 1.5})
    with pytest.raises(ValidationError):
        AugmentPolicy(blurr={"p": 0.1})
    policy = AugmentPolicy(rotate={"p": 0.3, "max_deg": 20})
    assert AugmentPolicy.model_validate(policy.model_dump()) == policy


def test_labels_are_the_same_bits_whichever_views_are_labelled_together(samples, bfm68) -> None:
    """A build labels all the copies of a batch of sources in one pass; a label must not depend on the batch
    (BLAS matrix products round differently with the batch size; the label code must not use them)."""
    from r3fa.readers import crop_labels, measure_sources, read_source

    logs = [[{"name": "rotate", "degrees": 20.0}]]
    logs += [[{"name": "roi_jitter", "scale": 1 + k / 50, "shift": [0.01, -0.01 * k]}, {"name": "flip"}]
             for k in range(8)]  # fmt: skip
    views = [(base, geometric_transform(base, geometric_map(log))) for _, base in samples for log in logs]
    assert any(t.mirrored for _, t in views) and not all(t.mirrored for _, t in views)
    together = crop_labels([b for b, _ in views], [t for _, t in views])
    for i, (base, transform) in enumerate(views):
        alone = crop_labels([base], [transform])
        np.testing.assert_array_equal(alone[0][0], together[0][i])
        np.testing.assert_array_equal(alone[1][0], together[1][i])
    shapes, exps = np.stack([b.shape for _, b in samples]), np.stack([b.exp for _, b in samples])
    batch = mirror_coefficients(shapes, exps, bfm68)  # float64: BLAS rounding would show here first
    for i in range(len(samples)):
        for alone, together in zip(mirror_coefficients(shapes[i : i + 1], exps[i : i + 1], bfm68), batch):
            np.testing.assert_array_equal(alone[0], together[i])
    reads = [read_source(item) for item, _ in samples]
    for one, many in zip([measure_sources([r])[0] for r in reads], measure_sources(reads)):
        assert one.label_nme == many.label_nme and np.array_equal(one.pose_deg, many.pose_deg)


def test_geometry_is_the_same_bits_whichever_items_are_computed_together(samples) -> None:
    """A build computes the source geometry (rois, image-frame affines) of a batch of sources, and the maps and
    transforms of all their copies, in vectorised passes; each must equal the one computed alone."""
    from r3fa.readers import load_source_files, source_reads

    logs = [[], [{"name": "flip"}], [{"name": "rotate", "degrees": 20.0}, {"name": "flip"}]]
    logs += [[{"name": "roi_jitter", "scale": 1 + k / 50, "shift": [0.01, -0.01 * k]}, {"name": "rotate", "degrees": -7.5 * k}]
             for k in range(6)]  # fmt: skip
    bases, all_logs = [base for _, base in samples for _ in logs], logs * len(samples)
    together = geometric_transforms(np.stack([base.roi for base in bases]), geometric_maps(all_logs))
    for base, log, transform in zip(bases, all_logs, together):
        np.testing.assert_array_equal(geometric_transform(base, geometric_map(log)).matrix, transform.matrix)
    files = [load_source_files(item) for item, _ in samples]
    for one, many in zip([source_reads([f])[0] for f in files], source_reads(files)):
        np.testing.assert_array_equal(one.roi, many.roi)
        np.testing.assert_array_equal(one.image_affine, many.image_affine)


def test_a_copy_cut_before_it_is_made_is_the_same_copy(samples) -> None:
    """A build draws a copy's geometry and cuts its crop right after the decode (`draw_geometry`, then
    `warp_crop`), then makes the copy from them; the record must be the one `augment_copies` makes alone."""
    policy = AugmentPolicy()
    jobs = [CopyJob(base, item, copy_rng(7, item.key, index), index)
            for item, base in samples[:4] for index in range(4)]  # fmt: skip
    rngs = [copy_rng(7, job.item.key, job.copy_index) for job in jobs]
    drawn = draw_geometry(rngs, [job.copy_index for job in jobs], np.stack([job.base.roi for job in jobs]), policy)
    cut = [job._replace(rng=rng, geometry=geometry, crop=warp_crop(job.base.image, geometry.transform))
           for job, rng, geometry in zip(jobs, rngs, drawn)]  # fmt: skip
    for alone, precut in zip(augment_copies(jobs, policy), augment_copies(cut, policy)):
        assert alone.augment == precut.augment and alone.key == precut.key
        np.testing.assert_array_equal(alone.crop, precut.crop)
        np.testing.assert_array_equal(alone.params, precut.params)
        np.testing.assert_array_equal(alone.landmarks, precut.landmarks)
    assert any(job.geometry.ops for job in cut)  # some copies were turned, flipped or jittered
