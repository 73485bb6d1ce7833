"""The model registry: which checkpoint is promoted, and every candidate that was judged.

A scheduled retrain produces a candidate; it replaces the promoted model only if its AFLW2000-3D mean NME
is lower. The registry is one JSON file (written atomically, under a lock so that two runs cannot
interleave their read-modify-write):

    {"promoted": Entry | null, "history": [Entry + {"decision", "reason"}, ...]}

An entry holds the checkpoint path, its metrics, the dataset manifest hash, the code version and the time.
"""

from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from r3fa.atomic import write_text_atomic

METRIC = "mean"  # the bins' "mean" entry of nme.json, in percent


@dataclass(frozen=True)
class Candidate:
    checkpoint: str
    metrics: dict  # nme.json "bins" block: {"0-30": .., "30-60": .., "60-90": .., "mean": .., "std": ..}
    manifest_hash: str
    code_version: str
    benchmark: str = "aflw2000-3d"
    run_id: str = ""
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def score(self) -> float:
        return float(self.metrics[METRIC])


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    candidate: Candidate
    previous: dict | None


def read_registry(path: str | Path) -> dict:
    """The registry's content; an empty registry when the file does not exist yet."""
    path = Path(path)
    if not path.exists():
        return {"promoted": None, "history": []}
    return json.loads(path.read_text())


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def judge(candidate: Candidate, promoted: dict | None) -> tuple[bool, str]:
    """Whether `candidate` should replace `promoted` (lower mean NME on the same benchmark wins)."""
    if promoted is None:
        return True, "no model promoted yet"
    if promoted.get("benchmark") != candidate.benchmark:
        return False, f"benchmark differs: promoted on {promoted.get('benchmark')}, candidate on {candidate.benchmark}"
    best = float(promoted["metrics"][METRIC])
    if candidate.score < best:
        return True, f"mean NME {candidate.score:.3f} % beats the promoted {best:.3f} %"
    return False, f"mean NME {candidate.score:.3f} % does not beat the promoted {best:.3f} %"


def promote_if_better(registry_path: str | Path, candidate: Candidate) -> Decision:
    """Judge `candidate` against the promoted model, record the decision, and promote it if it wins."""
    path = Path(registry_path)
    with _locked(path):
        registry = read_registry(path)
        previous = registry["promoted"]
        promoted, reason = judge(candidate, previous)
        entry = asdict(candidate)
        registry["history"].append({**entry, "decision": "promoted" if promoted else "rejected", "reason": reason})
        if promoted:
            registry["promoted"] = entry
        write_text_atomic(path, json.dumps(registry, indent=2))
    return Decision(promoted, reason, candidate, previous)
