"""The comparison report of an experiment: a table with intervals, the paired differences, one CED figure.

Input: the finished runs (`runs.run_one`'s done documents) and each run's `errors.parquet`. Output, in the
experiment folder:

    report.json  per variant: runs, steps, chosen epochs, and per |yaw| bin (and the protocol's mean) the mean
                 NME over seeds with its 95 % t-interval; per non-reference variant: the difference to the
                 reference (percentage points, negative = better) with a paired bootstrap interval over images
                 and a Welch interval over seeds, and a verdict that needs both to exclude 0
    report.md    the same as tables, with how each number was obtained
    ced.png      one CED curve per variant (each image's NME averaged over the variant's seeds)
    ced_bins.png the same per |yaw| bin, one panel each

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
from r3fa.experiments.stats import CONFIDENCE, Interval, paired_bootstrap, t_interval, welch_interval
from r3fa.metrics import BIN_NAMES
from r3fa.report import plot_ced, plot_ced_bins

COLUMNS: tuple[str, ...] = (*BIN_NAMES, "mean")
REPORT_SCHEMA = "r3fa-experiment-report-v1"


def read_errors(eval_dir: str | Path) -> dict[str, np.ndarray]:
    """`row` (in the benchmark), `yaw` (degrees), `bin` (index into `BIN_NAMES`) and `nme` (fraction) of every
    image of one evaluation's `errors.parquet`."""
    table = pq.read_table(Path(eval_dir) / "errors.parquet", columns=["row", "yaw", "bin", "nme"]).to_pydict()
    return {
        "row": np.asarray(table["row"]),
        "yaw": np.asarray(table["yaw"], np.float64),
        "bin": np.array([BIN_NAMES.index(b) for b in table["bin"]]),
        "nme": np.asarray(table["nme"], np.float64),
    }


def _seed_mean_errors(runs: Sequence[dict]) -> dict[str, np.ndarray]:
    """`read_errors` of the first run with `nme` averaged over all runs (which must cover the same images)."""
    first = read_errors(runs[0]["eval_dir"])
    stacked = [first["nme"]]
    for run in runs[1:]:
        other = read_errors(run["eval_dir"])
        if not np.array_equal(first["row"], other["row"]):
            raise ValueError(f"{run['eval_dir']}: evaluated on other images than {runs[0]['eval_dir']}")
        stacked.append(other["nme"])
    return {**first, "nme": np.mean(stacked, axis=0)}


def _verdict(images: Interval, seeds: Interval) -> str:
    """"lower NME" / "higher NME" only when both intervals (images, seeds) exclude 0 on the same side."""
    if images.excludes_zero() and seeds.excludes_zero() and (images.mean < 0) == (seeds.mean < 0):
        return "lower NME" if images.mean < 0 else "higher NME"
    return "no clear difference"


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
    ref = errors[reference]
    per_seed = {variant: {c: [d["bins"][c] for d in done] for c in COLUMNS} for variant, done in runs.items()}
    variants = {}
    for variant, done in runs.items():
        entry = {
            "seeds": [d["seed"] for d in done],
            "steps": [d["steps"] for d in done],
            "selected_epochs": [d["selected_epoch"] for d in done],
            "val_nme": [d["val_nme"] for d in done],
            "per_seed": per_seed[variant],
            "nme": {c: t_interval(np.array(per_seed[variant][c])).to_dict() for c in COLUMNS},
        }
        if variant != reference:
            if not np.array_equal(errors[variant]["row"], ref["row"]):
                raise ValueError(f"variant {variant!r} was evaluated on other images than {reference!r}")
            diffs = paired_bootstrap(ref["nme"], errors[variant]["nme"], ref["bin"], bootstrap_samples, bootstrap_seed)
            seeds = {c: welch_interval(np.array(per_seed[reference][c]), np.array(per_seed[variant][c])) for c in COLUMNS}
            entry["vs_reference"] = {
                c: {**diffs[c].to_dict(), "over_seeds": seeds[c].to_dict(), "verdict": _verdict(diffs[c], seeds[c])}
                for c in COLUMNS
            }
        variants[variant] = entry
    return {
        "schema": REPORT_SCHEMA,
        "experiment": name,
        "reference": reference,
        "confidence": CONFIDENCE,
        "images": {"total": int(ref["row"].size), **{b: int(np.sum(ref["bin"] == i)) for i, b in enumerate(BIN_NAMES)}},
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
        f"Difference to `{report['reference']}` (percentage points, negative = lower NME), first line "
        f"[{pct} paired bootstrap over the evaluation images, {boot['samples']} resamples stratified by yaw bin, "
        f"seed {boot['seed']}; each image's NME averaged over the variant's seeds], second line [{pct} Welch "
        "interval over seeds]; the verdict says lower/higher only when both intervals exclude 0:",
        "",
        "| variant | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for variant, entry in report["variants"].items():
        if "vs_reference" in entry:
            cells = [
                f"{_cell(d, signed=True)}<br>{_cell(d['over_seeds'], signed=True)}<br>**{d['verdict']}**"
                for d in (entry["vs_reference"][c] for c in COLUMNS)
            ]
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
    """Write `report.json`, `report.md`, `ced.png` and `ced_bins.png` into `out_dir`; returns the report and the
    paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(name, runs, reference, bootstrap_samples, bootstrap_seed)
    paths = {k: out / f for k, f in (("json", "report.json"), ("markdown", "report.md"), ("ced", "ced.png"),
                                     ("ced_bins", "ced_bins.png"))}  # fmt: skip
    write_text_atomic(paths["json"], json.dumps(report, indent=2) + "\n")
    write_text_atomic(paths["markdown"], markdown_report(report))
    errors = {variant: _seed_mean_errors(done) for variant, done in runs.items()}
    plot_ced([(variant, e["nme"]) for variant, e in errors.items()], paths["ced"])
    plot_ced_bins([(variant, e["nme"], e["yaw"]) for variant, e in errors.items()], paths["ced_bins"])
    return report, paths
