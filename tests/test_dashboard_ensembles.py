"""The Ensembles page's model-ensemble section, on a store where `build_ensemble` really ran."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from mlflow_numerai.dashboard import queries
from mlflow_numerai.dashboard.app.common import PAGES_DIR

APP = Path(__file__).resolve().parents[1] / "streamlit_app" / "app.py"


@pytest.fixture(scope="module")
def ensemble_store(tmp_path_factory, synthetic_dir):
    """Two ridge members (small, medium) and their fitted blend, in a fresh store."""
    import mlflow

    from mlflow_numerai.data.io import feature_columns, read_split
    from mlflow_numerai.entrypoints.ensemble import build_ensemble
    from mlflow_numerai.families.baseline import train_baseline
    from mlflow_numerai.packaging import log_numerai_model

    root = tmp_path_factory.mktemp("dash_ens")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)
        mlflow.set_tracking_uri(uri)
        train = read_split(synthetic_dir, "train")
        for fs in ("small", "medium"):
            predict, _ = train_baseline(train, feature_columns(synthetic_dir, fs))
            with mlflow.start_run():
                log_numerai_model(predict, data_dir=synthetic_dir, feature_set=fs, registered_model_name=f"dash-{fs}")
        built = build_ensemble("dash-blend", ["models:/dash-small/1", "models:/dash-medium/1"],
                               data_dir=str(synthetic_dir), objective="sharpe")
        yield uri, built


def test_ensemble_data_functions_read_what_was_logged(ensemble_store):
    uri, built = ensemble_store
    table = queries.ensemble_table(queries.runs_table(uri, ("ensemble",)))
    assert list(table["run_id"]) == [built["run_id"]]
    row = table.iloc[0]
    assert row["name"] == "dash-blend" and row["objective"] == "sharpe" and row["n_members"] == "2"
    assert row["numerai_corr_mean"] == pytest.approx(built["side_by_side"].loc["ensemble", "numerai_corr_mean"])
    weights = queries.ensemble_weights(uri, built["run_id"])
    assert dict(zip(weights["member"], weights["weight"])) == pytest.approx(built["weights"])
    per_era = queries.ensemble_per_era(uri, built["run_id"])
    assert set(per_era["model"]) == {"dash-small/1", "dash-medium/1", "ensemble"}
    blend = per_era[per_era["model"] == "ensemble"]
    expected = built["per_era"]["ensemble"]
    assert blend["corr"].to_numpy() == pytest.approx(expected.to_numpy(), nan_ok=True)
    assert blend["cumulative"].iloc[-1] == pytest.approx(expected.fillna(0).sum())
    corr = queries.ensemble_member_corr(uri, built["run_id"])
    pd.testing.assert_frame_equal(corr, built["member_corr"], check_names=False)


def test_ensembles_page_shows_blend_weights_per_era_and_member_corr(ensemble_store, monkeypatch):
    uri, built = ensemble_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page(str(PAGES_DIR / "ensembles.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = {m.label: m.value for m in at.metric}
    side = built["side_by_side"]
    assert shown["Blend corr"] == f"{side.loc['ensemble', 'numerai_corr_mean']:.4f}"
    assert shown["Best member corr"] == f"{side.drop(index='ensemble')['numerai_corr_mean'].max():.4f}"
    frames = [d.value for d in at.dataframe]
    side_shown = next(f for f in frames if "ensemble" in f.index)
    expected = side.loc["dash-small/1", "numerai_corr_mean"]
    assert side_shown.loc["dash-small/1", "numerai_corr_mean"] == pytest.approx(expected, abs=5e-5)
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    titles = {s.get("title") if isinstance(s.get("title"), str) else (s.get("title") or {}).get("text") for s in specs}
    assert {"members vs blend, per era", "weights"} <= titles
    assert any(s.get("layer", [{}])[0].get("mark", {}).get("type") == "rect" for s in specs)  # member corr heatmap
    # no Bayesian NN in this store: the page still says how to make one, below the ensembles
    assert at.code[0].value == queries.CREATE_COMMANDS["bayes_nn"]
