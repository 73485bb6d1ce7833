"""The comparison report of an experiment: a table with intervals, the paired differences, one CED figure.

Input: the finished runs (`runs.run_one`'s done documents) and each run's `errors.parquet`. Output, in the
experiment folder:

    report.json  per variant: runs, steps, chosen epochs, and per |yaw| bin (and the protocol's mean) the mean
                 NME over seeds with its 95 % t-interval; per non-reference variant: the paired bootstrap
                 difference to the reference (percentage points, negative = better) and a verdict
    report.md    the same as tables, with how each number was obtained
    ced.png      one CED curve per variant (each image's NME averaged over the variant's seeds)

A variant's per-image error for the paired bootstrap is the mean over its seeds, so the bootstrap interval is
the uncertainty from the choice of evaluation images, and the t-interval the one from training seeds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from r3fa.atomic import write_text_atomic
from r3fa.experiments.stats import CONFIDENCE, Interval, paired_bootstrap, t_interval
from r3fa.metrics import BIN_NAMES
from r3fa.report import plot_ced

COLUMNS: tuple[str, ...] = (*BIN_NAMES, "mean")
REPORT_SCHEMA = "r3fa-experiment-report-v1"


def read_errors(eval_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(benchmark rows, bin names, per-image NME) of one evaluation's `errors.parquet`."""
    table = pq.read_table(Path(eval_dir) / "errors.parquet", columns=["row", "bin", "nme"]).to_pydict()
    return np.asarray(table["row"]), np.asarray(table["bin"]), np.asarray(table["nme"], np.float64)


def _seed_mean_errors(runs: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, bin indices and per-image NME averaged over the runs (which must cover the same images)."""
    rows, bins, errors = read_errors(runs[0]["eval_dir"])
    stacked = [errors]
    for run in runs[1:]:
        other_rows, _, other = read_errors(run["eval_dir"])
        if not np.array_equal(rows, other_rows):
            raise ValueError(f"{run['eval_dir']}: evaluated on other images than {runs[0]['eval_dir']}")
        stacked.append(other)
    return rows, np.array([BIN_NAMES.index(b) for b in bins]), np.mean(stacked, axis=0)


def _verdict(diff: Interval) -> str:
    if not diff.excludes_zero():
        return "no clear difference"
    return "lower NME" if diff.mean < 0 else "higher NME"


def build_report(
    name: str, runs: Mapping[str, Sequence[dict]], reference: str, bootstrap_samples: int, bootstrap_seed: int
) -> dict:
    """The report document (see the module docstring) from the done documents of every variant's runs.

    Args:
        name: the experiment's name.
        runs: variant name -> its runs' done documents (one per seed), variants in the grid's order.
        reference: the variant the others are compared with.
        bootstrap_samples: resamples of the paired bootstrap.
        bootstrap_seed: its generator's seed.

    Raises:
        ValueError: variants evaluated on different images, or non-finite errors.
    """
    errors = {variant: _seed_mean_errors(done) for variant, done in runs.items()}
    ref_rows, ref_bins, ref_errors = errors[reference]
    variants = {}
    for variant, done in runs.items():
        per_run = [[d["bins"][c] for c in COLUMNS] for d in done]
        entry = {
            "seeds": [d["seed"] for d in done],
            "steps": [d["steps"] for d in done],
            "selected_epochs": [d["selected_epoch"] for d in done],
            "val_nme": [d["val_nme"] for d in done],
            "per_seed": {c: [row[i] for row in per_run] for i, c in enumerate(COLUMNS)},
            "nme": {c: t_interval(np.array([row[i] for row in per_run])).to_dict() for i, c in enumerate(COLUMNS)},
        }
        if variant != reference:
            rows, _, other = errors[variant]
            if not np.array_equal(rows, ref_rows):
                raise ValueError(f"variant {variant!r} was evaluated on other images than {reference!r}")
            diffs = paired_bootstrap(ref_errors, other, ref_bins, bootstrap_samples, bootstrap_seed)
            entry["vs_reference"] = {c: {**diffs[c].to_dict(), "verdict": _verdict(diffs[c])} for c in COLUMNS}
        variants[variant] = entry
    return {
        "schema": REPORT_SCHEMA,
        "experiment": name,
        "reference": reference,
        "confidence": CONFIDENCE,
        "images": {"total": int(ref_rows.size), **{b: int(np.sum(ref_bins == i)) for i, b in enumerate(BIN_NAMES)}},
        "bootstrap": {"samples": bootstrap_samples, "seed": bootstrap_seed, "stratified_by": "yaw bin"},
        "variants": variants,
    }


def _cell(interval: dict, signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    if interval["low"] is None:
        return fmt.format(interval["mean"]) + " (1 run)"
    return f"{fmt.format(interval['mean'])} [{fmt.format(interval['low'])}, {fmt.format(interval['high'])}]"


def markdown_report(report: dict) -> str:
    """`report.md`: the NME table with seed intervals and the paired-difference table."""
    pct = f"{report['confidence']:.0%}"
    images = report["images"]
    lines = [
        f"# Experiment {report['experiment']}",
        "",
        f"NME (%), mean over seeds [{pct} t-interval over seeds], on {images['total']} evaluation images "
        f"({', '.join(f'{b}: {images[b]}' for b in BIN_NAMES)}); mean = mean of the three bin means.",
        "",
        "| variant | seeds | steps | " + " | ".join(COLUMNS) + " |",
        "|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for variant, entry in report["variants"].items():
        steps = sorted(set(entry["steps"]))
        lines.append(
            f"| {variant} | {len(entry['seeds'])} | {'/'.join(map(str, steps))} | "
            + " | ".join(_cell(entry["nme"][c]) for c in COLUMNS) + " |"
        )  # fmt: skip
    boot = report["bootstrap"]
    lines += [
        "",
        f"Difference to `{report['reference']}` (percentage points, negative = lower NME) "
        f"[{pct} paired bootstrap over the evaluation images, {boot['samples']} resamples stratified by yaw bin, "
        f"seed {boot['seed']}; each image's NME averaged over the variant's seeds]:",
        "",
        "| variant | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for variant, entry in report["variants"].items():
        if "vs_reference" in entry:
            cells = [f"{_cell(entry['vs_reference'][c], signed=True)} {entry['vs_reference'][c]['verdict']}" for c in COLUMNS]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Checkpoints were chosen on each run's validation split (lowest `val_nme` in `metrics.csv`); the "
        "evaluation images were read only to evaluate the chosen checkpoint.",
    ]
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: str | Path, name: str, runs: Mapping[str, Sequence[dict]], reference: str,
    bootstrap_samples: int, bootstrap_seed: int,
) -> tuple[dict, dict[str, Path]]:  # fmt: skip
    """Write `report.json`, `report.md` and `ced.png` into `out_dir`; returns the report and the paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(name, runs, reference, bootstrap_samples, bootstrap_seed)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "ced": out / "ced.png"}
    write_text_atomic(paths["json"], json.dumps(report, indent=2) + "\n")
    write_text_atomic(paths["markdown"], markdown_report(report))
    curves = [(variant, _seed_mean_errors(done)[2]) for variant, done in runs.items()]
    plot_ced(curves, paths["ced"])
    return report, paths
