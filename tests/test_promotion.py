"""The promotion registry is a gate: whole metrics, better than the mean-parameter baseline, better than the
promoted model; every candidate is recorded, and a registry with a bad entry never jams later runs."""

import json
import math
import threading

import pytest

from r3fa.promotion import Candidate, Gate, promote_if_better, promoted_entry, read_registry

BASELINE = {"0-30": 20.0, "30-60": 23.0, "60-90": 26.0, "mean": 23.0, "std": 2.4}


def _candidate(mean: float | None, name: str, baseline: dict | None = BASELINE, **bins: float | None) -> Candidate:
    metrics = {"0-30": 4.0, "30-60": 5.0, "60-90": 6.0, "mean": mean, "std": 0.8, **bins}
    return Candidate(
        checkpoint=f"/ckpt/{name}.pth", metrics=metrics, manifest_hash="abc", code_version="test", baseline=baseline
    )


def test_first_candidate_is_promoted_then_only_better_ones(tmp_path):
    registry = tmp_path / "registry" / "promoted.json"
    first = promote_if_better(registry, _candidate(5.0, "a"))
    assert first.promoted and first.previous is None

    worse = promote_if_better(registry, _candidate(5.5, "b"))
    assert not worse.promoted
    assert worse.reason == "mean NME 5.500 % does not beat the promoted 5.000 %"

    better = promote_if_better(registry, _candidate(4.2, "c"))
    assert better.promoted

    content = json.loads(registry.read_text())
    assert content["promoted"]["checkpoint"] == "/ckpt/c.pth"
    assert content["promoted"]["baseline"] == BASELINE
    assert [h["decision"] for h in content["history"]] == ["promoted", "rejected", "promoted"]
    assert content["history"][1]["reason"].startswith("mean NME 5.500")


def test_equal_score_is_not_promoted(tmp_path):
    registry = tmp_path / "promoted.json"
    promote_if_better(registry, _candidate(4.0, "a"))
    assert not promote_if_better(registry, _candidate(4.0, "b")).promoted


@pytest.mark.parametrize(
    ("mean", "bins", "named"),
    [(math.nan, {}, "mean=nan"), (None, {}, "mean=None"), (5.0, {"60-90": math.inf}, "60-90=inf"),
     (5.0, {"30-60": "5.0"}, "30-60='5.0'")],
)  # fmt: skip
def test_a_candidate_with_a_missing_or_non_finite_metric_is_rejected_with_its_reason(
    tmp_path, mean, bins, named
) -> None:
    registry = tmp_path / "promoted.json"
    decision = promote_if_better(registry, _candidate(mean, "bad", **bins))
    assert not decision.promoted and named in decision.reason
    content = json.loads(registry.read_text())  # strict JSON: NaN and infinities are recorded as null
    assert content["promoted"] is None and content["history"][0]["decision"] == "rejected"
    after_one_promoted = promote_if_better(registry, _candidate(5.0, "good"))
    assert after_one_promoted.promoted
    again = promote_if_better(registry, _candidate(mean, "bad-again", **bins))
    assert not again.promoted and named in again.reason
    assert read_registry(registry)["promoted"]["checkpoint"] == "/ckpt/good.pth"


def test_a_candidate_no_better_than_the_mean_parameter_baseline_is_never_promoted(tmp_path) -> None:
    registry = tmp_path / "promoted.json"
    mean_face = promote_if_better(registry, _candidate(23.0, "mean-face"))
    assert not mean_face.promoted
    assert mean_face.reason == "mean NME 23.000 % does not beat the mean-parameter baseline 23.000 %"
    assert not promote_if_better(registry, _candidate(5.0, "no-baseline", baseline=None)).promoted
    assert not promote_if_better(registry, _candidate(22.0, "small-gain"), Gate(baseline_margin=2.0)).promoted
    assert not promote_if_better(registry, _candidate(9.0, "over-cap"), Gate(max_mean_nme=8.0)).promoted
    assert promote_if_better(registry, _candidate(20.0, "clear-gain"), Gate(baseline_margin=2.0)).promoted
    assert [h["decision"] for h in read_registry(registry)["history"]] == ["rejected"] * 4 + ["promoted"]


@pytest.mark.parametrize(
    "promoted",
    [{"checkpoint": "/old.pth", "benchmark": "aflw2000-3d", "metrics": {"mean": None}},
     {"checkpoint": "/old.pth", "benchmark": "aflw2000-3d", "metrics": {"0-30": 1, "30-60": 1, "60-90": 1, "mean": math.nan}},
     {"checkpoint": "/old.pth"}, "garbage", [1, 2]],
)  # fmt: skip
def test_a_registry_with_a_bad_promoted_entry_does_not_jam_later_runs(tmp_path, promoted) -> None:
    registry = tmp_path / "promoted.json"
    registry.write_text(json.dumps({"promoted": promoted, "history": [{"decision": "promoted"}]}))
    assert promoted_entry(registry) is None
    decision = promote_if_better(registry, _candidate(5.0, "new"))
    assert decision.promoted and decision.previous is None
    assert "unusable" in decision.notes[0]
    content = read_registry(registry)
    assert content["promoted"]["checkpoint"] == "/ckpt/new.pth" and len(content["history"]) == 2
    assert promoted_entry(registry)["checkpoint"] == "/ckpt/new.pth"


@pytest.mark.parametrize("text", ["{not json", "[1, 2, 3]", '{"history": 5}', "\x00\x01binary"])
def test_a_file_that_is_not_a_registry_is_kept_aside_and_a_new_one_started(tmp_path, text: str) -> None:
    registry = tmp_path / "promoted.json"
    registry.write_text(text)
    assert promoted_entry(registry) is None
    decision = promote_if_better(registry, _candidate(5.0, "new"))
    assert decision.promoted and "kept as" in decision.notes[0]
    (aside,) = tmp_path.glob("promoted.json.unreadable-*")
    assert aside.read_text() == text
    assert read_registry(registry)["promoted"]["checkpoint"] == "/ckpt/new.pth"


def test_concurrent_candidates_are_all_recorded(tmp_path):
    registry = tmp_path / "promoted.json"
    threads = [
        threading.Thread(target=promote_if_better, args=(registry, _candidate(3.0 + i / 10, f"c{i}"))) for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    content = read_registry(registry)
    assert len(content["history"]) == 8
    assert content["promoted"]["checkpoint"] == "/ckpt/c0.pth"
