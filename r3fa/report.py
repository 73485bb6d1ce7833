"""Tables and plots of results: the NME table laid out like the paper's Table 1, CEDs, training curves.

Everything here reads the `nme.json` documents that `r3fa.evaluation.evaluate` writes (as dicts) and plain
per-image arrays, so a table or a CED plot can combine runs made at different times (our model, the
mean-parameter baseline, the 3DDFA-V2 mb05 peer) without re-running them. The published rows are the
numbers of DESIGN §5, quoted from the papers, evaluated by their authors on the full benchmarks. A CED's x
axis reaches the NME under which 95 % of every curve's images lie (at least 10 %), so a weak baseline or a
diverged candidate is shown whole instead of cut off; `plot_ced_bins` draws one panel per |yaw| bin on
the same axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from r3fa.metrics import AUC_LIMIT, BIN_NAMES, auc, ced, yaw_bin


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


CED_COVERAGE = 0.95  # the x axis reaches the NME below which this fraction of every curve's images lie
CED_MIN_LIMIT = 0.10  # ... and at least 10 %, so the AUC@7 % mark is always on the plot


def ced_limit(values: Sequence[np.ndarray], coverage: float = CED_COVERAGE, floor: float = CED_MIN_LIMIT) -> float:
    """Right end of a CED plot's x axis (fraction) that shows every curve: the largest `coverage` quantile of
    the finite values of any curve, at least `floor`, rounded up to a readable step (a half decade)."""
    tops = [float(np.quantile(v[np.isfinite(v)], coverage)) for v in map(np.asarray, values) if np.isfinite(v).any()]
    top = max([floor, *tops])
    step = 10.0 ** np.floor(np.log10(top)) / 2
    return float(np.ceil(top / step - 1e-9) * step)


def _draw_ced(ax, curves: Sequence[tuple[str, np.ndarray]], max_nme: float) -> None:
    """Draw the CED of each (label, per-image NME) on `ax`, x from 0 to `max_nme` (fraction), in percent."""
    thresholds = np.linspace(0.0, max_nme, 801)
    for label, values in curves:
        finite = np.asarray(values, np.float64)
        finite = finite[np.isfinite(finite)]
        ax.plot(
            thresholds * 100, ced(finite, thresholds), label=f"{label} (AUC@{AUC_LIMIT:.0%} {auc(finite):.3f})"
        )
    ax.axvline(AUC_LIMIT * 100, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="NME (%)", ylabel="fraction of images", xlim=(0, max_nme * 100), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def plot_ced(
    curves: Sequence[tuple[str, np.ndarray]], path: str | Path, max_nme: float | None = None
) -> Path:
    """Cumulative error distributions of several runs, AUC at 7 % in the legend.

    Args:
        curves: (label, per-image NME as fractions) for each run.
        path: the PNG to write.
        max_nme: right end of the x axis (fraction); None: `ced_limit`, which shows every curve.

    Returns:
        `path`.
    """
    limit = max_nme if max_nme is not None else ced_limit([values for _, values in curves])
    fig, ax = _pyplot().subplots(figsize=(6, 4.5), dpi=120)
    _draw_ced(ax, curves, limit)
    ax.set_title("all images", fontsize=9)
    return _save(fig, path)


def plot_ced_bins(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """One CED panel per |yaw| bin (0-30, 30-60, 60-90 degrees), one below the other on the same x axis.

    Args:
        curves: (label, per-image NME as fractions, per-image yaw in degrees) for each run.
        path: the PNG to write.

    Returns:
        `path`.
    """
    binned = [(label, np.asarray(nme_values, np.float64), yaw_bin(yaw)) for label, nme_values, yaw in curves]
    limit = ced_limit([values[bins == k] for _, values, bins in binned for k in range(len(BIN_NAMES))])
    fig, axes = _pyplot().subplots(len(BIN_NAMES), 1, figsize=(6.5, 11), dpi=110, sharex=True)  # one below the other
    for k, (ax, name) in enumerate(zip(axes, BIN_NAMES)):
        _draw_ced(ax, [(label, values[bins == k]) for label, values, bins in binned], limit)
        counts = " / ".join(dict.fromkeys(str(int((bins == k).sum())) for _, _, bins in binned))
        ax.set_title(f"|yaw| {name} degrees ({counts} images)", fontsize=9)
        ax.label_outer()  # the shared NME axis is labelled once, under the last panel
    return _save(fig, path)


def plot_training_curves(history: Sequence[dict], path: str | Path) -> Path:
    """Training loss, validation loss and validation NME per epoch (the `metrics.csv` rows of a run).

    Args:
        history: one dict per epoch with `epoch`, `train_loss`, `val_loss`, `val_nme` (NaN where absent).
        path: the PNG to write.

    Returns:
        `path`.
    """
    epochs = [int(r["epoch"]) + 1 for r in history]

    def column(key: str) -> list[float]:
        return [float(r.get(key, np.nan)) for r in history]

    fig, (loss_ax, nme_ax) = _pyplot().subplots(1, 2, figsize=(10, 4), dpi=110)
    loss_ax.plot(epochs, column("train_loss"), marker="o", label="train")
    loss_ax.plot(epochs, column("val_loss"), marker="o", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend(fontsize=8)
    nme_ax.plot(epochs, column("val_nme"), marker="o", color="C2")
    nme_ax.set(xlabel="epoch", ylabel="NME (%, crop frame)", title="validation NME")
    for ax in (loss_ax, nme_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)
