"""The promotion registry: first candidate promoted, better replaces, worse is recorded as rejected."""

import json
import threading

from r3fa.promotion import Candidate, promote_if_better, read_registry


def _candidate(mean: float, name: str) -> Candidate:
    bins = {"0-30": mean - 1, "30-60": mean, "60-90": mean + 1, "mean": mean, "std": 0.8}
    return Candidate(checkpoint=f"/ckpt/{name}.pth", metrics=bins, manifest_hash="abc", code_version="test")


def test_first_candidate_is_promoted_then_only_better_ones(tmp_path):
    registry = tmp_path / "registry" / "promoted.json"
    first = promote_if_better(registry, _candidate(5.0, "a"))
    assert first.promoted and first.previous is None

    worse = promote_if_better(registry, _candidate(5.5, "b"))
    assert not worse.promoted
    assert "does not beat" in worse.reason

    better = promote_if_better(registry, _candidate(4.2, "c"))
    assert better.promoted

    content = json.loads(registry.read_text())
    assert content["promoted"]["checkpoint"] == "/ckpt/c.pth"
    assert [h["decision"] for h in content["history"]] == ["promoted", "rejected", "promoted"]
    assert content["history"][1]["reason"].startswith("mean NME 5.500")


def test_equal_score_is_not_promoted(tmp_path):
    registry = tmp_path / "promoted.json"
    promote_if_better(registry, _candidate(4.0, "a"))
    assert not promote_if_better(registry, _candidate(4.0, "b")).promoted


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
