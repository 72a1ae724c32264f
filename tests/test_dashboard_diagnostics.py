"""Dashboard (issue 14): the Diagnostics page, the Compare page's ranking, and the two defects seen
in a real browser (Uncertainty's burn-AUC bars, Ensembles' cut "mean ± std" tiles)."""

from __future__ import annotations

import pandas as pd
import pytest

from mlflow_numerai.dashboard import queries
from tests.test_dashboard_app import chart_data, charts, f4, metrics, open_page


@pytest.fixture(scope="module")
def store(dashboard_store):
    return dashboard_store


def test_diagnostics_page_tiles_curves_and_table(store, monkeypatch):
    uri, logged = store
    at = open_page(uri, "diagnostics", monkeypatch)
    at.selectbox(key="diag_model").select("numerai-baseline").run()
    assert not at.exception, [e.value for e in at.exception]
    lm = logged.metrics[logged.baseline]
    m = metrics(at)
    for label, key in (("CORR", "numerai_corr_mean"), ("MMC", "mmc_mean"), ("BMC", "bmc_mean"), ("CWMM", "cwmm_mean"),
                       ("TB200", "numerai_corr_tb200_mean"), ("FNC", "fnc_mean"), ("Churn", "churn_mean"),
                       ("Payout est.", "payout_mean"), ("Max exposure", "max_feature_exposure")):
        assert m[label] == f4(lm[key]), label
    assert m["Sharpe"] == f"{lm['numerai_corr_sharpe']:.3f}"
    assert m["Smart Sharpe"] == "—"  # not logged by this store: a dash, not a made-up number
    # Six tiles to a row cut "-0.0011" to "-0.0…" in Chromium: no row of tiles holds more than four.
    tile_columns = [col for col in at.columns if col.get("metric")]
    assert len(tile_columns) == len(m)
    assert all(col.weight >= 1 / 4 - 1e-9 for col in tile_columns), [col.weight for col in tile_columns]
    # cumulative curves of both versions (same run here), CORR/MMC/BMC each
    curves = next(df for sets in chart_data(at) for df in sets if "cumulative" in df)
    assert set(curves["score"]) == {"CORR", "MMC", "BMC"}
    assert curves["version"].nunique() == 2
    diag = logged.diagnostics[logged.baseline]
    corr_curve = curves[(curves["score"] == "CORR") & (curves["version"] == curves["version"].iloc[0])]
    pd.testing.assert_series_equal(corr_curve["cumulative"].reset_index(drop=True), diag["corr"].cumsum(),
                                   check_names=False, atol=1e-12)
    table = at.dataframe[0].value
    assert list(table.index) == list(diag["era"])
    assert table["mmc"].iloc[0] == pytest.approx(diag["mmc"].iloc[0], abs=5e-5)
    assert at.get("download_button"), "no download of the per-era table"


def test_diagnostics_page_without_per_era_table_says_so(store, monkeypatch):
    uri, logged = store
    at = open_page(uri, "diagnostics", monkeypatch)
    at.selectbox(key="diag_model").select("numerai-bnn").run()
    assert queries.PER_ERA_DIAGNOSTICS_ARTIFACT in " ".join(c.value for c in at.caption)


def test_compare_ranks_runs_by_any_diagnostic(store, monkeypatch):
    uri, logged = store
    at = open_page(uri, "compare", monkeypatch)
    options = at.selectbox(key="cmp_sort").options
    assert {"CORR", "MMC", "BMC", "CWMM", "TB200", "FNC", "Churn", "Payout est."} <= set(options)
    scored = {rid: m for rid, m in logged.metrics.items() if "churn_mean" in m}
    for label, key, lowest_first in (("Churn", "churn_mean", True), ("MMC", "mmc_mean", False)):
        at.selectbox(key="cmp_sort").select(label).run()
        table = at.table[-1].value
        order = sorted(scored, key=lambda r: scored[r][key], reverse=not lowest_first)[:3]
        shown = [float(v) for v in table.loc[key]]
        assert shown == pytest.approx([scored[r][key] for r in order], abs=5e-5), label


def test_ensembles_tiles_hold_one_short_number_each(store, monkeypatch):
    """Defect: "Members corr (mean ± std)" was cut to "0.0167 ± 0.0..." in a quarter-width tile."""
    uri, logged = store
    at = open_page(uri, "ensembles", monkeypatch)
    m = metrics(at)
    assert all("±" not in v and len(v) <= 8 for v in m.values()), m
    lm = logged.metrics[logged.bnn["laplace"]]
    assert m["Members corr (std)"] == f4(lm["member_corr_mean_std"])


def test_uncertainty_burn_auc_bars_have_data_of_their_own(store, monkeypatch):
    """Defect: the "Burn AUC per model" bars drew nothing in the browser."""
    uri, _ = store
    at = open_page(uri, "uncertainty", monkeypatch)
    spec = charts(at)[0]
    layers = spec.get("layer", [spec])
    bars = next(layer for layer in layers if (layer.get("mark") or {}).get("type", layer.get("mark")) == "bar")
    assert bars["encoding"]["x"]["field"] == "burn_auc"
    sets = chart_data(at)[0]
    assert len(sets) == 1, "every layer must draw from the bars' data set"
    assert pd.api.types.is_float_dtype(sets[0]["burn_auc"]) and sets[0]["burn_auc"].notna().all()
    assert all(layer.get("data", bars.get("data")) == bars.get("data") for layer in layers)
    # Seen in Chromium on the demo's store: in the layer with the chance rule the bar's band came
    # out 1 px high, so each bar gets an explicit thickness and the chart the room for it.
    size = bars["mark"].get("size") if isinstance(bars["mark"], dict) else None
    assert size is not None and size >= 10, bars["mark"]
    height = spec.get("height")
    n_models = len(sets[0])
    assert height is not None and height >= size * n_models, (height, size, n_models)
