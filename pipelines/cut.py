"""Between the phases: from every candidate's outcome to exactly the target counts.

Phase 1 made each planned candidate into an encoded sample or a rejection (`pipelines.parts`). Per stage
("augment": real samples, "synthesis": face-profiling views) the cut keeps the first `target` accepted
candidates by rank (the plan's fixed, seeded order) and counts the other accepted ones as *surplus* (made, not
delivered; not a rejection). A stage without a target delivers every accepted candidate. The cut reads only the
parts' small indexes and depends on nothing but the plan and the candidates' outcomes, so it is the same on
every run, resumed or not, with any number of workers.

Counts, per stage and per source and stage: `planned == delivered + rejected + surplus`. A stage that delivers
fewer than `(1 - target_tolerance) * target` fails the build (`ShortfallError`) with a histogram of the
rejection reasons.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.mix import MixConfig
from pipelines.parts import PartFiles, entry_rejection
from pipelines.plan import PartSpec, Plan, SampleSpec
from r3fa.atomic import read_marker
from r3fa.errors import UserError
from r3fa.records import Rejection

STAGE_NAMES = {"augment": "real", "synthesis": "synthetic"}
_NUMBERS = re.compile(r"[-+]?\d+(\.\d+)?")


class ShortfallError(UserError):
    """A stage delivered fewer samples than its target allows; the message lists the rejection reasons."""


@dataclass
class Cut:
    """The outcome of the cut.

    Attributes:
        delivered: the delivered candidates, in plan (candidate) order.
        locations: key -> (part name, offset, length, CRC-32) of every delivered sample.
        rejections: the candidates' rejections, in plan order.
        by_stage: per stage name ("real", "synthetic"): target (None when none), planned, delivered, rejected,
            surplus.
        by_source: per "source/stage name": planned, delivered, rejected, surplus.
        surplus_items: item keys with an accepted candidate but none delivered.
        delivered_items: item keys with at least one delivered sample.
    """

    delivered: list[SampleSpec] = field(default_factory=list)
    locations: dict[str, tuple[str, int, int, int]] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    by_stage: dict[str, dict[str, int | None]] = field(default_factory=dict)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    surplus_items: set[str] = field(default_factory=set)
    delivered_items: set[str] = field(default_factory=set)


def reason_histogram(rejections: list[Rejection], top: int = 10) -> list[str]:
    """The most frequent rejection reasons (numbers masked so that like reasons group), one line each."""
    counts = Counter(f"{r.stage}: {_NUMBERS.sub('#', r.reason)}" for r in rejections)
    return [f"  {n} x {reason}" for reason, n in counts.most_common(top)]


def cut_candidates(plan: Plan, parts: list[PartSpec], out_dir: str | Path) -> Cut:
    """Read the parts' indexes and cut each stage to its target.

    Raises:
        FileNotFoundError: a part is not complete.
    """
    cut = Cut()
    accepted: dict[str, list[SampleSpec]] = {stage: [] for stage in STAGE_NAMES}
    outcome: dict[str, Rejection | tuple[str, int, int, int]] = {}
    for part in parts:
        index = read_marker(PartFiles.of(out_dir, part.name).index)
        if index is None:
            raise FileNotFoundError(f"part {part.name} is not complete")
        for entry in index["entries"]:
            rejection = entry_rejection(entry)
            outcome[entry[0]] = rejection if rejection is not None else (part.name, *entry[1:])
    for spec in plan.candidates:
        made = outcome[spec.key]
        if isinstance(made, Rejection):
            cut.rejections.append(made)
        else:
            accepted[spec.stage].append(spec)
    keep: set[str] = set()
    for stage, specs in accepted.items():
        target = plan.target(stage)
        ranked = sorted(specs, key=lambda s: s.rank)
        keep.update(s.key for s in (ranked if target is None else ranked[:target]))
    made_items: set[str] = set()
    for spec in plan.candidates:
        made = outcome[spec.key]
        if isinstance(made, Rejection):
            continue
        made_items.add(spec.item.key)
        if spec.key in keep:
            cut.delivered.append(spec)
            cut.locations[spec.key] = made
            cut.delivered_items.add(spec.item.key)
    cut.surplus_items = made_items - cut.delivered_items
    _count(cut, plan, keep, outcome)
    return cut


def _count(cut: Cut, plan: Plan, keep: set[str], outcome: dict) -> None:
    per: dict[tuple[str, str], Counter] = {}
    for spec in plan.candidates:
        c = per.setdefault((spec.item.source, spec.stage), Counter())
        c["planned"] += 1
        if isinstance(outcome[spec.key], Rejection):
            c["rejected"] += 1
        elif spec.key in keep:
            c["delivered"] += 1
        else:
            c["surplus"] += 1
    fields = ("planned", "delivered", "rejected", "surplus")
    for stage, name in STAGE_NAMES.items():
        total = Counter()
        for (_, s), c in per.items():
            if s == stage:
                total.update(c)
        target = plan.target(stage)
        cut.by_stage[name] = {"target": target, **{f: total[f] for f in fields}}
    cut.by_source = {
        f"{source}/{STAGE_NAMES[stage]}": {f: c[f] for f in fields} for (source, stage), c in sorted(per.items())
    }


def check_shortfall(config: MixConfig, cut: Cut) -> None:
    """Raise `ShortfallError` when a stage delivered fewer than `(1 - target_tolerance) * target` samples."""
    short = [
        f"{name}: delivered {c['delivered']} of target {c['target']} ({c['planned']} planned, {c['rejected']} rejected)"
        for name, c in cut.by_stage.items()
        if c["target"] is not None and c["delivered"] < (1.0 - config.target_tolerance) * c["target"]
    ]
    if short:
        raise ShortfallError(
            f"target counts not reached (target_tolerance {config.target_tolerance}; raise reserve_fraction or "
            f"lower the targets); no manifest written: {'; '.join(short)}; rejection reasons:\n"
            + "\n".join(reason_histogram(cut.rejections))
        )
