"""Figures a person looks at: CED axes that show every curve, and PNGs embedded in markdown artifacts.

`r3fa.report.ced_limit` must put the right end of a CED plot where every curve has (nearly) reached the top,
a weak baseline included; `flows.figures` must embed a figure so that the UI can show it (a small PNG as it
is, a large one re-encoded to fit the size bound), name a figure it cannot embed, and never fail the flow.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import cv2
import numpy as np

from flows.figures import MAX_EMBEDDED_BYTES, MAX_EMBEDDED_SIDE, compare_runs, figures_markdown, publish_evaluation
from r3fa.metrics import ced
from r3fa.report import CED_COVERAGE, CED_MIN_LIMIT, ced_limit, plot_ced, plot_ced_bins

URI = re.compile(r"!\[[^]]*\]\(data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)\)")


def test_the_ced_axis_shows_every_curve(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    good = rng.gamma(4.0, 0.008, 500)  # a model: median ~3 %
    baseline = rng.gamma(6.0, 0.04, 500)  # a mean-face baseline: median ~23 %
    limit = ced_limit([good, baseline, np.array([np.nan, np.inf])])
    assert limit > 0.10
    for values in (good, baseline):
        assert ced(values, np.array([limit]))[0] >= CED_COVERAGE
    assert ced_limit([good * 0.1]) == CED_MIN_LIMIT  # never narrower than 10 %: the AUC@7 % mark stays visible
    yaw = rng.uniform(-90, 90, 500)
    ced_path = plot_ced([("model", good), ("baseline", baseline)], tmp_path / "ced.png")
    bins_path = plot_ced_bins([("model", good, yaw), ("baseline", baseline, yaw)], tmp_path / "bins.png")
    assert cv2.imread(str(ced_path)) is not None and cv2.imread(str(bins_path)) is not None


def test_figures_are_embedded_within_the_size_bound(tmp_path: Path) -> None:
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    cv2.imwrite(str(small), np.full((40, 60, 3), 200, np.uint8))
    cv2.imwrite(str(large), np.random.default_rng(0).integers(0, 255, (2400, 3200, 3), np.uint8))  # noise: ~20 MB
    markdown = figures_markdown("t", {"small": small, "large": large, "gone": tmp_path / "gone.png"})
    (kind_small, data_small), (kind_large, data_large) = URI.findall(markdown)
    assert kind_small == "png" and base64.b64decode(data_small) == small.read_bytes()
    jpeg = base64.b64decode(data_large)
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert kind_large == "jpeg" and len(jpeg) <= MAX_EMBEDDED_BYTES and max(decoded.shape[:2]) <= MAX_EMBEDDED_SIDE
    assert "## gone\n\n*(not available" in markdown and str(tmp_path / "gone.png") in markdown


def test_a_figure_that_cannot_be_made_never_fails_the_flow(tmp_path: Path) -> None:
    (tmp_path / "nme.json").write_text("{not json")  # an evaluation folder left broken
    assert publish_evaluation(tmp_path, "nme-x-figures", "x") is None
    assert compare_runs([tmp_path, tmp_path / "missing"], tmp_path / "cmp") is None
    assert not (tmp_path / "cmp").exists()
