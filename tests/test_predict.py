"""Prediction on real faces: mb05 through `Predictor` on official AFLW2000-3D crops, checkpoint round trips,
the `r3fa predict` command on one image and on a folder, and the drawing and OBJ helpers it uses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from r3fa.checkpoint import model_payload, save_checkpoint
from r3fa.crop import CropConvention
from r3fa.draw import contact_sheet, draw_landmarks
from r3fa.labels import landmark_nme
from r3fa.mesh_io import read_obj, write_obj
from r3fa.models import create
from r3fa.params import load_whitening
from r3fa.predictor import Predictor, load_predictor, normalise_crops

AFLW_IMAGES = ("image00002", "image00004", "image00006")


@pytest.fixture(scope="module")
def mb05_path(data_root: Path) -> Path:
    return data_root / "3ddfa_v2" / "weights" / "mb05_120x120.pth"


@pytest.fixture(scope="module")
def mb05(mb05_path: Path) -> Predictor:
    return load_predictor(mb05_path)


def test_normalise_crops_keeps_bgr_order_and_scales():
    crops = np.zeros((2, 120, 120, 3), np.uint8)
    crops[..., 0] = 255  # blue channel first, as OpenCV reads it
    x = normalise_crops(crops)
    assert x.shape == (2, 3, 120, 120) and x.dtype == torch.float32
    assert float(x[0, 0, 0, 0]) == pytest.approx(127.5 / 128) and float(x[0, 1, 0, 0]) == pytest.approx(-127.5 / 128)


def test_mb05_lands_on_official_aflw2000_crops(mb05: Predictor, data_root: Path):
    names = sorted((data_root / "aflw2000_3d_crop").glob("*.jpg"))
    assert len(names) == 2000
    rows = np.arange(0, 2000, 20)  # 100 images across the whole set (all yaw ranges)
    rois = np.load(data_root / "3ddfa/test.configs/AFLW2000-3D_crop.roi_box.npy")[rows]
    truth = np.load(data_root / "3ddfa/test.configs/AFLW2000-3D.pts68.npy")[rows, :2]
    crops = np.stack([cv2.imread(str(names[i])) for i in rows])
    errors = landmark_nme(mb05.landmarks_in_image(crops, rois)[:, :2], truth)
    assert mb05.convention is CropConvention.V2 and mb05.whitening.name == "v2"
    assert np.median(errors) < 0.04, np.median(errors)  # published mb05 mean ~3.6-3.8 %; measured median 2.9 %


def test_r3fa_checkpoint_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = create("mobilenet_v1", widen_factor=0.5).eval()
    whitening = load_whitening("v1")
    path = save_checkpoint(
        model_payload("mobilenet_v1", {"widen_factor": 0.5}, model.state_dict(), whitening, CropConvention.V1),
        tmp_path / "model.pth",
    )
    crops = np.random.default_rng(0).integers(0, 256, (2, 120, 120, 3), dtype=np.uint8)
    loaded = load_predictor(path)
    assert loaded.convention is CropConvention.V1 and loaded.whitening.name == "v1"
    np.testing.assert_allclose(loaded.params(crops), Predictor(model, whitening, CropConvention.V1).params(crops), rtol=1e-6)
    with pytest.raises(ValueError, match="holds a 'mobilenet_v1'"):
        load_predictor(path, model_name="mobdensenet")


def test_raw_3ddfa_v2_checkpoint_needs_mobilenet_v1(mb05_path: Path):
    with pytest.raises(ValueError, match="3DDFA-V2"):
        load_predictor(mb05_path, model_name="mobdensenet")
    assert load_predictor(mb05_path, model_name="mobilenet_v1").model.widen_factor == 0.5


def test_predict_one_image_with_overlay_and_mesh(mb05_path: Path, aflw2000_dir: Path, tmp_path: Path):
    image = aflw2000_dir / "image00002.jpg"
    args = ["predict", str(image), "--checkpoint", str(mb05_path), "--overlay", str(tmp_path / "o.png")]
    result = CliRunner().invoke(app, [*args, "--mesh", str(tmp_path / "o.obj")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["roi_source"].endswith("image00002.mat") and len(out["params"]) == 62
    assert set(out["pose_degrees"]) == {"pitch", "yaw", "roll"}
    from r3fa.io import read_landmarks_file

    assert landmark_nme(np.array(out["landmarks"])[:2], read_landmarks_file(image.with_suffix(".mat"))) < 0.05
    assert cv2.imread(str(tmp_path / "o.png")).shape == (450, 450, 3)
    vertices, triangles = read_obj(tmp_path / "o.obj")
    assert vertices.shape == (3, 4096) and triangles.shape == (2 * 63 * 63, 3)
    x0, y0, x1, y1 = out["roi"]  # the posed mesh lies inside the face's roi
    assert x0 < np.median(vertices[0]) < x1 and y0 < np.median(vertices[1]) < y1


def test_predict_folder_batches_and_reports_unusable_images(mb05_path: Path, aflw2000_dir: Path, tmp_path: Path):
    folder = tmp_path / "faces"
    folder.mkdir()
    for stem in AFLW_IMAGES:
        for suffix in (".jpg", ".mat"):
            shutil.copy(aflw2000_dir / f"{stem}{suffix}", folder)
    shutil.copy(aflw2000_dir / "image00008.jpg", folder)  # no annotation beside it: skipped
    base = ["predict", str(folder), "--checkpoint", str(mb05_path), "--batch-size", "2"]
    lines = CliRunner().invoke(app, [*base, "--overlay", str(tmp_path / "overlays")])
    assert lines.exit_code == 0, lines.output
    records = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [Path(r["image"]).stem for r in records] == list(AFLW_IMAGES)
    assert "image00008.jpg" in lines.stderr and "no roi" in lines.stderr
    assert sorted(p.stem for p in (tmp_path / "overlays").iterdir()) == list(AFLW_IMAGES)
    listed = CliRunner().invoke(app, [*base, "--json-list"])
    assert [r["params"] for r in json.loads(listed.stdout)] == [r["params"] for r in records]


def test_predict_without_a_roi_source_is_a_clear_error(mb05_path: Path, aflw2000_dir: Path, tmp_path: Path):
    lonely = tmp_path / "face.jpg"
    shutil.copy(aflw2000_dir / "image00002.jpg", lonely)
    result = CliRunner().invoke(app, ["predict", str(lonely), "--checkpoint", str(mb05_path)])
    assert result.exit_code == 2 and "no roi" in result.stderr
    with_roi = CliRunner().invoke(app, ["predict", str(lonely), "--checkpoint", str(mb05_path), "--roi", "75,113,391,429"])
    assert with_roi.exit_code == 0, with_roi.output
    bad = CliRunner().invoke(app, ["predict", str(lonely), "--checkpoint", str(mb05_path), "--roi", "1,2,3"])
    assert bad.exit_code == 2 and "x0,y0,x1,y1" in bad.output


def test_draw_landmarks_marks_the_points_on_a_copy():
    image = np.zeros((20, 30), np.uint8)
    out = draw_landmarks(image, np.array([[5.0, 20.4], [4.0, 10.6]]), color=(0, 0, 255), radius=1, scale=2)
    assert image.max() == 0 and out.shape == (40, 60, 3)
    assert tuple(out[8, 10]) == (0, 0, 255) and tuple(out[21, 41]) == (0, 0, 255)
    assert out[:, :, :2].max() == 0


def test_contact_sheet_tiles_and_captions():
    tiles = [np.full((10, 20, 3), v, np.uint8) for v in (50, 100, 150)]
    sheet = contact_sheet(tiles, ncols=2, captions=["a", "b", "c"], cell=40)
    assert sheet.shape[1] == 80 and sheet.shape[0] > 80  # two rows of 40 plus caption strips
    assert sheet[20, 20, 0] == 50 and sheet[20, 60, 0] == 100
    with pytest.raises(ValueError):
        contact_sheet(tiles, ncols=2, captions=["a"])


def test_obj_round_trip(tmp_path: Path):
    vertices = np.array([[0, 1, 0, 1], [0, 0, 1, 1], [0.5, 0.25, 0, -1]], np.float64)
    triangles = np.array([[0, 1, 2], [1, 3, 2]])
    v, f = read_obj(write_obj(tmp_path / "m.obj", vertices, triangles))
    np.testing.assert_allclose(v, vertices, atol=1e-6)
    np.testing.assert_array_equal(f, triangles)
    with pytest.raises(ValueError):
        write_obj(tmp_path / "bad.obj", vertices, np.array([[0, 1, 4]]))
