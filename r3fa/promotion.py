"""The model registry: which checkpoint is promoted, and every candidate that was judged.

A scheduled retrain produces a candidate; the registry is a gate it must pass, in this order:

1. **Its metrics are whole.** Every bin of the `nme.json` block (`0-30`, `30-60`, `60-90`, `mean`) is a finite
   number; a missing, `None`, NaN or infinite value rejects the candidate with the name of the metric.
2. **It beats the floor.** Its mean NME is below the mean-parameter baseline measured on the same images
   (`r3fa.evaluation.MeanParamsPredictor`: the training labels' mean for every face), by `Gate.baseline_margin`
   percentage points, and below `Gate.max_mean_nme` when that is set. No baseline, no promotion.
3. **It beats the promoted model** on the same benchmark (strictly lower mean NME).

The registry is one JSON file (written atomically, under a lock so that two runs cannot interleave their
read-modify-write):

    {"promoted": Entry | null, "history": [Entry + {"decision", "reason"}, ...]}

An entry holds the checkpoint path, its metrics, the baseline's metrics, the dataset manifest hash, the code
version and the time. A registry left by an older version never jams later runs: a promoted entry that is not
usable (missing keys, `mean: null`, NaN, not an object) counts as "no valid promoted model", and the decision's
`notes` and the log say so; a file that is not a registry at all (not JSON, not an object) is moved aside to
`<name>.unreadable-<time>` (kept, never deleted) and a new registry is started, with a note.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from r3fa.atomic import write_text_atomic

METRIC = "mean"  # the bins' "mean" entry of nme.json, in percent
REQUIRED_METRICS = ("0-30", "30-60", "60-90", METRIC)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gate:
    """The absolute bar of step 2 (see the module docstring).

    Attributes:
        baseline_margin: percentage points of mean NME by which a candidate must beat the mean-parameter
            baseline (0: any improvement; negative: a tolerance, for smoke tests of models trained for seconds).
        max_mean_nme: a candidate's mean NME must also be below this (percent); None: no fixed cap.
    """

    baseline_margin: float = 0.0
    max_mean_nme: float | None = None


@dataclass(frozen=True)
class Candidate:
    checkpoint: str
    metrics: dict  # nme.json "bins" block: {"0-30": .., "30-60": .., "60-90": .., "mean": .., "std": ..}
    manifest_hash: str
    code_version: str
    benchmark: str = "aflw2000-3d"
    run_id: str = ""
    baseline: dict | None = None  # the mean-parameter baseline's "bins" block on the same images
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def score(self) -> float:
        """The mean NME (percent); NaN when it is missing or not a number."""
        return _number(self.metrics, METRIC) if isinstance(self.metrics, dict) else math.nan


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    candidate: Candidate
    previous: dict | None  # the valid promoted entry the candidate was compared with (None: there was none)
    notes: list[str] = field(default_factory=list)  # what was wrong with the registry, if anything


def _number(metrics: dict, key: str) -> float:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def metrics_problem(metrics: Any) -> str | None:
    """Why a `bins` block cannot be judged (missing or non-finite metrics), or None when it can."""
    if not isinstance(metrics, dict):
        return f"metrics are a {type(metrics).__name__}, not an object"
    bad = [f"{k}={metrics.get(k)!r}" for k in REQUIRED_METRICS if not math.isfinite(_number(metrics, k))]
    return f"missing or non-finite metric(s): {', '.join(bad)}" if bad else None


def entry_problem(entry: Any) -> str | None:
    """Why a registry entry cannot stand as the promoted model, or None when it can."""
    if not isinstance(entry, dict):
        return f"the entry is a {type(entry).__name__}, not an object"
    missing = [k for k in ("checkpoint", "benchmark", "metrics") if not isinstance(entry.get(k), (str, dict))]
    if missing:
        return f"the entry lacks {', '.join(missing)}"
    return metrics_problem(entry["metrics"])


def valid_promoted(registry: dict) -> tuple[dict | None, list[str]]:
    """The promoted entry of `registry` if it is usable, and notes on what was wrong otherwise."""
    promoted = registry.get("promoted")
    if promoted is None:
        return None, []
    problem = entry_problem(promoted)
    if problem is None:
        return promoted, []
    return None, [f"the registry's promoted entry is unusable ({problem}): treated as no promoted model"]


def read_registry(path: str | Path) -> dict:
    """The registry's content, `{"promoted", "history"}`; an empty registry when the file does not exist.

    Raises:
        ValueError: the file is not a registry (not JSON, or not an object with a `history` list).
    """
    path = Path(path)
    if not path.exists():
        return {"promoted": None, "history": []}
    registry = json.loads(path.read_text())
    if not isinstance(registry, dict) or not isinstance(registry.get("history", []), list):
        raise ValueError(f"{path}: not a registry (expected an object with a history list)")
    return {"promoted": registry.get("promoted"), "history": list(registry.get("history", []))}


def promoted_entry(path: str | Path) -> dict | None:
    """The usable promoted entry of the registry at `path`, or None (nothing promoted, or an unusable file)."""
    try:
        registry = read_registry(path)
    except (ValueError, OSError) as err:
        log.warning("%s: unreadable registry, treated as no promoted model (%s)", path, err)
        return None
    promoted, notes = valid_promoted(registry)
    for note in notes:
        log.warning("%s: %s", path, note)
    return promoted


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def judge(candidate: Candidate, promoted: dict | None, gate: Gate = Gate()) -> tuple[bool, str]:
    """Whether `candidate` should replace `promoted` (a valid entry or None), by the module's three steps."""
    problem = metrics_problem(candidate.metrics)
    if problem is not None:
        return False, f"candidate not judged: {problem}"
    score = candidate.score
    baseline = math.nan if not isinstance(candidate.baseline, dict) else _number(candidate.baseline, METRIC)
    if not math.isfinite(baseline):
        return False, "no finite mean-parameter baseline on the same images to judge the candidate against"
    bar = baseline - gate.baseline_margin
    if not score < bar:
        return False, (
            f"mean NME {score:.3f} % does not beat the mean-parameter baseline {baseline:.3f} %"
            + (f" (bar {bar:.3f} %, margin {gate.baseline_margin:g} points)" if gate.baseline_margin else "")
        )
    if gate.max_mean_nme is not None and not score < gate.max_mean_nme:
        return False, f"mean NME {score:.3f} % is not below the bar of {gate.max_mean_nme:.3f} %"
    if promoted is None:
        return True, f"no model promoted yet; mean NME {score:.3f} % beats the mean-parameter baseline {baseline:.3f} %"
    if promoted.get("benchmark") != candidate.benchmark:
        return False, f"benchmark differs: promoted on {promoted.get('benchmark')}, candidate on {candidate.benchmark}"
    best = _number(promoted["metrics"], METRIC)
    if score < best:
        return True, f"mean NME {score:.3f} % beats the promoted {best:.3f} %"
    return False, f"mean NME {score:.3f} % does not beat the promoted {best:.3f} %"


def _set_aside(path: Path, error: Exception) -> str:
    aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    path.rename(aside)
    return f"{path} was not a registry ({error}); kept as {aside.name}, a new registry was started"


def promote_if_better(registry_path: str | Path, candidate: Candidate, gate: Gate = Gate()) -> Decision:
    """Judge `candidate` (`judge`), record the decision in the registry, and promote it if it passes.

    Never raises for a bad candidate or a bad registry: both become a rejection or a note.
    """
    path = Path(registry_path)
    notes: list[str] = []
    with _locked(path):
        try:
            registry = read_registry(path)
        except (ValueError, UnicodeDecodeError) as err:
            notes.append(_set_aside(path, err))
            registry = {"promoted": None, "history": []}
        previous, problems = valid_promoted(registry)
        notes += problems
        promoted, reason = judge(candidate, previous, gate)
        entry = asdict(candidate)
        registry["history"].append({**entry, "decision": "promoted" if promoted else "rejected", "reason": reason})
        if promoted:
            registry["promoted"] = entry
        write_text_atomic(path, json.dumps(_finite(registry), indent=2, allow_nan=False))
    for note in notes:
        log.warning(note)
    return Decision(promoted, reason, candidate, previous, notes)


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None (the registry is strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
