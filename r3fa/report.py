"""Tables and plots of evaluation results, laid out like the paper's Table 1.

Everything here reads the `nme.json` documents that `r3fa.evaluation.evaluate` writes (as dicts), so a
table or a CED plot can combine runs made at different times (our model, the mean-parameter baseline,
the 3DDFA-V2 mb05 peer) without re-running them. The published rows are the numbers of DESIGN §5,
quoted from the papers, evaluated by their authors on the full benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from r3fa.metrics import AUC_LIMIT, BIN_NAMES, auc, ced


@dataclass(frozen=True)
class PublishedRow:
    """A row quoted from a paper: NME (%) per yaw bin and the mean of the bins."""

    method: str
    benchmark: str
    bins: tuple[float | None, float | None, float | None]
    mean: float


PUBLISHED: tuple[PublishedRow, ...] = (
    PublishedRow("3DDFA (CVPR16)", "aflw2000-3d", (3.43, 4.24, 7.17), 4.94),
    PublishedRow("R3FA (paper)", "aflw2000-3d", (3.149, 4.010, 5.270), 4.143),
    PublishedRow("R3FA (paper)", "aflw", (None, None, None), 5.393),
    PublishedRow("PRNet", "aflw2000-3d", (2.75, 3.51, 4.61), 3.62),
    PublishedRow("3DDFA-V2 (MobileNet, M+R)", "aflw2000-3d", (2.75, 3.49, 4.53), 3.59),
    PublishedRow("3DDFA-V2 (MobileNet, M+R+S)", "aflw2000-3d", (2.63, 3.42, 4.48), 3.51),
    PublishedRow("SynergyNet", "aflw2000-3d", (2.65, 3.30, 4.27), 3.41),
)

COLUMNS: tuple[str, ...] = ("method", "benchmark", "evaluated on", *BIN_NAMES, "mean", "std")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table_rows(results: Sequence[dict], benchmarks: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Rows of the comparison table: ours first, then the published rows of the same benchmarks.

    Args:
        results: `nme.json` documents.
        benchmarks: benchmarks whose published rows to add; those of `results` when None.

    Returns:
        One dict per row, keyed by `COLUMNS`, values formatted as strings.
    """
    rows = []
    for res in results:
        bins = res["bins"]
        rows.append(
            {
                "method": res["model"]["name"],
                "benchmark": res["benchmark"]["name"],
                "evaluated on": res["evaluated_on"],
                **{name: _fmt(bins[name]) for name in BIN_NAMES},
                "mean": _fmt(bins["mean"]),
                "std": _fmt(bins["std"]),
            }
        )
    wanted = set(benchmarks if benchmarks is not None else (r["benchmark"]["name"] for r in results))
    for pub in PUBLISHED:
        if pub.benchmark in wanted:
            rows.append(
                {
                    "method": pub.method,
                    "benchmark": pub.benchmark,
                    "evaluated on": "full set, published",
                    **{name: _fmt(v) for name, v in zip(BIN_NAMES, pub.bins)},
                    "mean": _fmt(pub.mean),
                    "std": "-",
                }
            )
    return rows


def table_notes(results: Sequence[dict]) -> list[str]:
    """Which rows were evaluated on which benchmark selection: one line per distinct selection."""
    groups: dict[tuple[str, str, int, str], list[str]] = {}
    for res in results:
        bench = res["benchmark"]
        key = (bench["name"], res["evaluated_on"], bench["images"], bench["note"])
        groups.setdefault(key, []).append(res["model"]["name"])
    notes = [
        f"{', '.join(models)}: {name}, {where} ({images} images). {note}"
        for (name, where, images, note), models in groups.items()
    ]
    notes.append(
        "Published rows: the authors' numbers on the full benchmarks (DESIGN §5), NME (%) normalised by "
        "sqrt(w h) of the ground-truth box, mean = mean of the three yaw-bin means."
    )
    return notes


def markdown_table(results: Sequence[dict], benchmarks: Sequence[str] | None = None) -> str:
    """The comparison table as Markdown, with the notes that say which rows were evaluated on what."""
    rows = table_rows(results, benchmarks)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in rows]
    lines.append("")
    lines += [f"- {note}" for note in table_notes(results)]
    return "\n".join(lines) + "\n"


def plot_ced(curves: Sequence[tuple[str, np.ndarray]], path: str | Path, max_nme: float = 0.10) -> Path:
    """Cumulative error distributions of several runs, AUC at 7 % in the legend.

    Args:
        curves: (label, per-image NME as fractions) for each run.
        path: the PNG to write.
        max_nme: right end of the x axis (fraction).

    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = np.linspace(0.0, max_nme, 401)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for label, values in curves:
        finite = np.asarray(values, np.float64)
        finite = finite[np.isfinite(finite)]
        ax.plot(
            thresholds * 100, ced(finite, thresholds), label=f"{label} (AUC@{AUC_LIMIT:.0%} {auc(finite):.3f})"
        )
    ax.axvline(AUC_LIMIT * 100, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="NME (%)", ylabel="fraction of images", xlim=(0, max_nme * 100), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
