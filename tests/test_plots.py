"""`mlflow_numerai.plots`: the per-era charts draw from frames and write PNGs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlflow_numerai import plots


@pytest.fixture
def per_era() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    index = pd.Index([f"{e:04d}" for e in range(30)], name="era")
    frame = pd.DataFrame(rng.normal(0.01, 0.02, (30, 3)), index=index, columns=["corr", "mmc", "bmc"])
    frame.iloc[4, 1] = np.nan  # a NaN era counts 0
    return frame


@pytest.mark.parametrize("kind", ["bar", "line"])
@pytest.mark.parametrize("cumulative", [False, True])
def test_plot_per_era_writes_a_png(per_era, tmp_path, kind, cumulative):
    path = tmp_path / "per_era.png"
    fig = plots.plot_per_era(per_era, path, kind=kind, cumulative=cumulative, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 1


def test_plot_per_era_takes_a_series_and_no_path(per_era):
    fig = plots.plot_per_era(per_era["corr"])
    assert fig.axes[0].get_xlabel() == "era"


def test_plot_per_era_refuses_an_unknown_kind(per_era):
    with pytest.raises(ValueError, match="kind"):
        plots.plot_per_era(per_era, kind="pie")


def test_evaluator_charts(per_era, tmp_path):
    corr = per_era[["corr"]].rename(columns={"corr": "target"})
    assert plots.plot_cumulative_corr(corr, tmp_path / "c.png", per_era[["mmc"]]).exists()
    assert plots.plot_diagnostics(per_era, tmp_path / "d.png", "diagnostics (target)").exists()
