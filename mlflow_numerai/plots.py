"""Matplotlib figures of per-era scores (no pyplot: no global state, an Agg canvas per figure).

`plot_per_era` draws any per-era table (bars or lines, optionally cumulative); `plot_cumulative_corr`
and `plot_diagnostics` are the `numerai` evaluator's two charts. Each takes frames or series indexed
by era and writes a PNG when given a path. Imports nothing of the package (it may use `conventions`);
matplotlib is imported where a figure is drawn.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def _era_ticks(ax, x: np.ndarray, index: pd.Index) -> None:
    """About 12 era labels along the x axis."""
    step = max(1, len(x) // 12)
    ax.set_xticks(x[::step], [str(e) for e in index[::step]], rotation=45)


def plot_per_era(
    per_era: pd.DataFrame | pd.Series,
    path: str | os.PathLike | None = None,
    *,
    kind: str = "bar",
    cumulative: bool = False,
    title: str | None = None,
    ylabel: str | None = None,
):
    """One chart of per-era scores (index era, one column per series): side-by-side bars
    (``kind="bar"``) or lines (``kind="line"``), of the scores or (``cumulative=True``) of their
    cumulative sums, NaN eras counting 0. Returns the matplotlib Figure; saved to ``path`` (PNG)
    when given."""
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas

    if kind not in ("bar", "line"):
        raise ValueError(f"kind must be 'bar' or 'line', got {kind!r}")
    frame = per_era.to_frame() if isinstance(per_era, pd.Series) else per_era
    x = np.arange(len(frame))
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    width = 0.8 / max(1, frame.shape[1])
    for i, column in enumerate(frame.columns):
        values = frame[column].fillna(0).to_numpy(dtype=float)
        values = values.cumsum() if cumulative else values
        if kind == "bar":
            ax.bar(x + (i - (frame.shape[1] - 1) / 2) * width, values, width=width, label=str(column))
        else:
            ax.plot(x, values, label=str(column))
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel(ylabel or ("cumulative" if cumulative else "per era"))
    ax.set_xlabel("era")
    if frame.shape[1] > 1:
        ax.legend(loc="best", fontsize="small")
    _era_ticks(ax, x, frame.index)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def plot_cumulative_corr(
    per_era_corr: pd.DataFrame, path: str | os.PathLike, per_era_mmc: pd.DataFrame | None = None
) -> Path:
    """Per-era corr of the main target (bars) and the cumulative corr of every target (lines)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas

    main = per_era_corr.columns[0]
    x = np.arange(len(per_era_corr))
    fig = Figure(figsize=(10, 6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2]})
    values = per_era_corr[main].fillna(0).to_numpy()
    ax1.bar(x, values, color=np.where(values >= 0, "tab:green", "tab:red"))
    ax1.axhline(0, color="black", linewidth=0.5)
    ax1.set_ylabel(f"corr ({main})")
    for target in per_era_corr.columns:
        ax2.plot(x, per_era_corr[target].fillna(0).cumsum().to_numpy(), label=f"corr {target}")
    if per_era_mmc is not None:
        for target in per_era_mmc.columns:
            ax2.plot(x, per_era_mmc[target].fillna(0).cumsum().to_numpy(), linestyle="--", label=f"mmc {target}")
    ax2.axhline(0, color="black", linewidth=0.5)
    ax2.set_ylabel("cumulative")
    ax2.set_xlabel("era")
    ax2.legend(loc="best", fontsize="small")
    _era_ticks(ax2, x, per_era_corr.index)
    fig.suptitle("numerai evaluation: per-era and cumulative corr")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


_DIAG_COLORS = {"corr": "tab:blue", "mmc": "tab:orange", "bmc": "tab:green"}


def plot_diagnostics(per_era: pd.DataFrame, path: str | os.PathLike, title: str = "diagnostics") -> Path:
    """Numerai's diagnostics chart: cumulative CORR, MMC and BMC (top) and their per-era bars
    side by side (bottom)."""
    from matplotlib.figure import Figure

    shown = [c for c in ("corr", "mmc", "bmc") if c in per_era.columns]
    x = np.arange(len(per_era))
    fig = Figure(figsize=(11, 6.5))
    ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    width = 0.8 / len(shown)
    for i, name in enumerate(shown):
        values = per_era[name].fillna(0).to_numpy()
        label = f"{name.upper()} (mean {per_era[name].mean():+.4f})"
        ax1.plot(x, values.cumsum(), color=_DIAG_COLORS[name], label=label)
        offset = (i - (len(shown) - 1) / 2) * width
        ax2.bar(x + offset, values, width=width, color=_DIAG_COLORS[name], label=name.upper())
    for ax in (ax1, ax2):
        ax.axhline(0, color="black", linewidth=0.5)
    ax1.set_ylabel("cumulative")
    ax1.legend(loc="upper left", fontsize="small")
    ax2.set_ylabel("per era")
    ax2.set_xlabel("era")
    _era_ticks(ax2, x, per_era.index)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)
