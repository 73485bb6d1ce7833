"""The face-profiling stage: job schedule, the `synthesize_sample` contract, rejections, and the preview CLI."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.synthesis_stage import SynthesisConfig, synthesis_jobs, synthesize_sample
from r3fa.io import BadInputError
from r3fa.params import pose_degrees
from r3fa.profiling import profile_face
from r3fa.readers import iter_aflw2000, load_source_sample
from r3fa.records import SampleRecord


@pytest.fixture(scope="module")
def source(aflw2000_dir):
    item = next(i for i in iter_aflw2000(aflw2000_dir) if i.key == "aflw2000_3d_image00006")
    return item, load_source_sample(item)


def test_jobs_are_deterministic_and_follow_the_schedule():
    config = SynthesisConfig(count=25, profiles_per_image=3, yaw_increments_deg=[15, 30, 45, 60])
    jobs = synthesis_jobs(config, n_sources=6, seed=7)
    assert jobs == synthesis_jobs(config, n_sources=6, seed=7) != synthesis_jobs(config, n_sources=6, seed=8)
    assert len(jobs) == 25
    assert all(0 <= s < 6 and abs(d) in (15, 30, 45, 60) for s, d in jobs)
    first_pass = jobs[:18]
    per_source = {s: [d for t, d in first_pass if t == s] for s in range(6)}
    assert all(len(v) == 3 and len({abs(d) for d in v}) == 3 for v in per_source.values())
    assert synthesis_jobs(SynthesisConfig(count=0), n_sources=0, seed=0) == []


def test_config_rejects_bad_schedules():
    with pytest.raises(ValueError):
        SynthesisConfig(count=1, yaw_increments_deg=[])
    with pytest.raises(ValueError):
        SynthesisConfig(count=1, yaw_increments_deg=[-10])
    with pytest.raises(ValueError):
        SynthesisConfig(count=1, stage="mirror")


def test_synthesize_sample_contract(source):
    item, base = source
    record = synthesize_sample(base, item, 20.0, "synth_aflw2000_3d_image00006_0")
    assert isinstance(record, SampleRecord)
    assert record.synthetic and record.parent_key == item.key and record.key == "synth_aflw2000_3d_image00006_0"
    assert record.source == item.source and record.subject_id == item.subject_id
    assert record.crop.shape == (120, 120, 3) and record.crop.dtype == np.uint8
    assert record.params.shape == (62,) and record.params.dtype == np.float32
    assert record.landmarks.shape == (2, 68) and record.landmarks.dtype == np.float32
    assert record.yaw_increment == pytest.approx(20.0)
    assert record.pose_deg[1] == pytest.approx(base.pose_deg[1] + 20.0, abs=0.5)
    np.testing.assert_allclose(record.pose_deg, pose_degrees(record.params), atol=1e-3)
    assert record.augment[0]["op"] == "face_profiling" and 0 <= record.augment[0]["hole_fraction"] <= 0.15


def test_rejections_carry_a_reason(source):
    item, base = source
    strict = SynthesisConfig(count=1, max_hole_fraction=1e-6)
    with pytest.raises(BadInputError, match="profiling: holes in the face"):
        synthesize_sample(base, item, 45.0, "k1", strict)
    turned = profile_face(base.image, base.image_affine, base.shape, base.exp, 60.0)  # up to the 89-degree limit
    at_limit = dataclasses.replace(base, image_affine=turned.image_affine, pose_deg=pose_degrees(turned.params))
    with pytest.raises(BadInputError, match="profiling: .*cannot increase"):
        synthesize_sample(at_limit, item, 10.0, "k3")
    with pytest.raises(ValueError, match="dots"):
        synthesize_sample(base, item, 10.0, "a.b")


def test_preview_cli_writes_a_sheet(aflw2000_dir, tmp_path):
    from cli.main import app

    out = tmp_path / "sheet.png"
    image, mat = aflw2000_dir / "image00002.jpg", aflw2000_dir / "image00002.mat"
    result = CliRunner().invoke(
        app, ["synth", "preview", str(image), "--mat", str(mat), "--yaw-steps", "20,40", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.shape[1] == 3 * 240 and sheet.shape[0] >= 240  # plus a caption strip


def test_preview_cli_reports_a_bad_label_file(aflw2000_dir, capsys):
    from cli.main import app, run

    image = aflw2000_dir / "image00002.jpg"
    assert run(app, ["synth", "preview", str(image), "--mat", str(image)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("r3fa: error: ") and "corrupt .mat" in err[0], err
