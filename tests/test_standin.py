"""The 300W-LP-shaped stand-in (`r3fa.standin`, `r3fa data standin-300wlp`): read back through the project's
300W-LP reader, labels equal to the AFLW2000-3D sources (mirrored for the flips), deterministic, idempotent,
resumable, and usable as a mix config's source."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from r3fa.errors import UserError
from r3fa.io import read_landmarks_file
from r3fa.readers import CropTransform, crop_label, iter_300wlp, iter_aflw2000, load_source_sample
from r3fa.standin import POOL_DIR, STATE_FILE, W300LP_VIEWS, plan_views, write_standin

IMAGES = 50
# 25 plain views in 300W-LP's proportions (5207 : 37676 : 1786 : 16556, largest remainders), each with its flip
FOLDERS = {"AFW": 2, "HELEN": 15, "IBUG": 1, "LFPW": 7}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("standin") / "300W_LP"
    write_standin(root, IMAGES, seed=3)
    return root


@pytest.fixture(scope="module")
def items(tree: Path) -> list:
    return list(iter_300wlp(tree))


def _aflw_item(aflw2000_dir: Path, image_path: str):
    stem = Path(os.path.realpath(image_path)).stem
    return next(item for item in iter_aflw2000(aflw2000_dir) if Path(item.image_path).stem == stem)


def _tree_listing(root: Path) -> dict[str, str]:
    """Every entry of a tree: a link's target, a file's bytes as hex (the state file excluded)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file() and path.name != STATE_FILE:
            out[rel] = path.read_bytes().hex()
    return out


def test_the_300wlp_reader_reads_the_tree(tree: Path, items: list) -> None:
    expected = {f"300wlp/{folder}": n for folder, n in FOLDERS.items()}
    expected |= {f"300wlp/{folder}_Flip": n for folder, n in FOLDERS.items()}
    assert len(items) == IMAGES
    assert Counter(item.source for item in items) == expected
    for item in items:
        assert Path(item.image_path).is_symlink() and Path(item.annotation_path).is_symlink()
        flipped = item.source.endswith("_Flip")
        assert item.landmark_path == "" if flipped else Path(item.landmark_path).is_file()
    # views of one face share a subject, and a face's flips share it too (300W-LP's grouping)
    subjects = Counter(item.subject_id for item in items)
    assert len(subjects) < IMAGES // 2 and all(n % 2 == 0 for n in subjects.values())


def test_side_landmark_files_hold_the_source_pt3d_68(items: list) -> None:
    from scipy.io import loadmat

    item = next(item for item in items if item.landmark_path)
    source = loadmat(os.path.realpath(item.annotation_path))["pt3d_68"]
    side = loadmat(item.landmark_path)
    assert side["pts_2d"].shape == (68, 2) and side["pts_3d"].shape == (68, 3)
    np.testing.assert_array_equal(side["pts_3d"], source.T)
    np.testing.assert_array_equal(read_landmarks_file(item.landmark_path), source[:2])


def test_a_plain_view_has_its_source_label(items: list, aflw2000_dir: Path) -> None:
    item = next(item for item in items if item.source == "300wlp/HELEN")
    ours, source = load_source_sample(item), load_source_sample(_aflw_item(aflw2000_dir, item.image_path))
    np.testing.assert_array_equal(ours.image, source.image)
    for field in ("image_affine", "shape", "exp", "landmarks", "roi"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(source, field))
    assert ours.label_nme == source.label_nme


def test_a_flip_holds_the_mirror_image_and_the_mirrored_label(items: list, aflw2000_dir: Path) -> None:
    flip = next(item for item in items if item.source == "300wlp/HELEN_Flip")
    ours, source = load_source_sample(flip), load_source_sample(_aflw_item(aflw2000_dir, flip.image_path))
    width = source.image.shape[1]
    assert np.abs(ours.image.astype(int) - cv2.flip(source.image, 1).astype(int)).mean() < 2.0  # JPEG re-encoding
    # the crop of the flip equals the builder's mirroring augmentation of the source: same crop-frame label
    crop = CropTransform.from_roi(ours.roi).matrix
    mirror = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])
    mirrored = CropTransform(np.hstack([crop[:, :2] @ mirror[:, :2], crop[:, :2] @ mirror[:, 2:] + crop[:, 2:]]))
    assert mirrored.mirrored
    params, landmarks = crop_label(ours, CropTransform.from_roi(ours.roi))
    want_params, want_landmarks = crop_label(source, mirrored)
    np.testing.assert_allclose(landmarks, want_landmarks, atol=1e-6)
    np.testing.assert_allclose(params[:12], want_params[:12], rtol=1e-4, atol=1e-5)  # Pose_Para is float32
    np.testing.assert_allclose(params[12:], want_params[12:], rtol=1e-6, atol=1e-3)
    assert ours.pose_deg[1] == pytest.approx(-source.pose_deg[1], abs=1e-3)
    assert ours.label_nme == pytest.approx(source.label_nme, abs=0.5)


def test_rerun_changes_nothing_and_another_request_is_refused(tree: Path, tmp_path: Path) -> None:
    before = _tree_listing(tree)
    summary = write_standin(tree, IMAGES, seed=3)
    assert summary.unchanged and summary.links_made == 0 and summary.images == IMAGES
    assert _tree_listing(tree) == before
    with pytest.raises(UserError, match="images: 50 there, 52 asked"):
        write_standin(tree, 52, seed=3)
    with pytest.raises(UserError, match="seed: 3 there, 4 asked"):
        write_standin(tree, IMAGES, seed=4)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a stand-in")
    with pytest.raises(UserError, match="not a stand-in tree"):
        write_standin(tmp_path / "other", IMAGES)


def test_same_request_same_tree_and_a_killed_run_is_finished(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_standin(first, 9, seed=1)
    write_standin(second, 9, seed=1)
    assert _tree_listing(first) == _tree_listing(second)  # link targets and pool bytes
    # a run killed half way: incomplete state, links missing or wrong, a pool file cut short
    state = first / POOL_DIR / STATE_FILE
    state.write_text(json.dumps({**json.loads(state.read_text()), "complete": False}))
    links = sorted(p for p in first.rglob("*.jpg") if p.is_symlink())
    links[0].unlink()
    links[1].unlink()
    links[1].symlink_to("/nonexistent.jpg")
    pool_file = next((first / POOL_DIR / "flip").glob("*.mat"))
    pool_file.write_bytes(pool_file.read_bytes()[:100])
    summary = write_standin(first, 9, seed=1)
    assert not summary.unchanged and summary.links_made == 2
    assert _tree_listing(first) == _tree_listing(second)
    assert json.loads(state.read_text())["complete"] is True


def test_plan_views_at_300wlp_size() -> None:
    sources = [f"image{i:05d}" for i in range(2000)]
    views = plan_views(122_450, sources, seed=0)
    folders = Counter(v.folder for v in views)
    assert folders == {**W300LP_VIEWS, **{f"{s}_Flip": n for s, n in W300LP_VIEWS.items()}}
    assert len({(v.folder, v.name) for v in views}) == len(views)
    faces = Counter(v.name.rsplit("_", 1)[0] for v in views if not v.flipped)
    assert 14 < len(views) / 2 / len(faces) < 18  # about 16 views per face, as in 300W-LP
    assert len({v.source for v in views}) == 2000  # every source used, several faces each
    assert plan_views(122_450, sources, seed=0) == views and plan_views(122_450, sources, seed=1) != views
    plain = plan_views(7, sources, seed=0, flips=False)
    assert len(plain) == 7 and not any(v.flipped for v in plain)


def test_a_mix_config_plans_over_the_tree_by_absolute_root(tree: Path) -> None:
    from pipelines.mix import MixConfig
    from pipelines.plan import make_plan

    config = MixConfig.model_validate(
        {
            "name": "standin",
            "sources": [{"kind": "300wlp", "root": str(tree)}],
            "augmentation": {"copies_per_image": 1},
            "samples_per_shard": 16,
        }
    )
    plan = make_plan(config)
    assert len(plan.items) == IMAGES and plan.n_samples == IMAGES  # one plain crop per image


def test_cli_json_and_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import app, run

    out = tmp_path / "tree"
    argv = ["data", "standin-300wlp", "--images", "4", "--out", str(out), "--seed", "2", "--format", "json"]
    assert run(app, argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 4 and report["unchanged"] is False and sum(report["folders"].values()) == 4
    assert run(app, argv) == 0 and json.loads(capsys.readouterr().out)["unchanged"] is True
    argv[3] = "6"
    assert run(app, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("r3fa: error:") and "images: 4 there, 6 asked" in err and len(err.strip().splitlines()) == 1
