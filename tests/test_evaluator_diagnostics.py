"""The `numerai` evaluator's diagnostics (issue 14): BMC, CWMM, top/bottom, churn against the
registered model's previous version or @champion, payout, per-era tables and the figure."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlflow_numerai import scoring
from mlflow_numerai.plugins import evaluator as ev
from mlflow_numerai.scoring import ScoringError
from tests.test_evaluator import FEATURES, StrictModel, linear_predict, make_frame


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('diag') / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()
    return uri


@pytest.fixture()
def tracking(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    yield store
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="module")
def frame():
    """Eras of 420 rows: big enough for TB200; a meta model and a benchmark column."""
    frame = make_frame(seed=11, n_eras=4, rows=420)
    rng = np.random.default_rng(3)
    signal = frame["feature_00"] - frame["feature_01"]
    frame["meta"] = signal + rng.normal(0, 1.5, len(frame))
    frame["bench"] = signal + rng.normal(0, 2.0, len(frame))
    return frame


def _evaluate(model_uri, frame, config):
    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(
            model_uri, data=frame, targets="target", model_type="regressor", evaluators=["numerai"],
            evaluator_config={"numerai": config},
        )
    return run.info.run_id, result


def _log_model():
    with mlflow.start_run():
        return mlflow.pyfunc.log_model(name="model", python_model=StrictModel(), pip_requirements=["pandas"]).model_uri


def test_every_diagnostic_equals_scoring(tracking, frame):
    uri = _log_model()
    previous = linear_predict(frame)["prediction"].iloc[::2] + 0.01  # a version scored on fewer ids
    previous.iloc[::3] = np.random.default_rng(0).random(len(previous.iloc[::3]))
    config = {"meta_model": "meta", "benchmark": "bench", "feature_cols": FEATURES[:3],
              "previous_predictions": previous, "targets": ["target_aux_20"]}
    run_id, result = _evaluate(uri, frame, config)
    m = result.metrics

    preds, eras, target = linear_predict(frame), frame["era"], frame["target"]
    corr = scoring.per_era_numerai_corr(preds, target, eras)["prediction"]
    mmc = scoring.per_era_correlation_contribution(preds, frame["meta"], target, eras)["prediction"]
    bmc = scoring.per_era_bmc(preds, frame["bench"], target, eras)["prediction"]
    tb = scoring.per_era_numerai_corr(preds, target, eras, top_bottom=200)["prediction"]
    churn, n_shared = scoring.per_era_churn(preds, previous, eras)
    payout = scoring.payout_estimate(corr, mmc)
    expected = {
        "numerai_corr_smart_sharpe": scoring.smart_sharpe(corr),
        "numerai_corr_positive_share": scoring.positive_share(corr),
        "mmc_max_drawdown": scoring.max_drawdown(mmc),
        "bmc_mean": bmc.mean(),
        "bmc_sharpe": scoring.sharpe(bmc),
        "cwmm_mean": scoring.per_era_corr_with(preds, frame["meta"], eras)["prediction"].mean(),
        "corr_with_benchmark_mean": scoring.per_era_corr_with(preds, frame["bench"], eras)["prediction"].mean(),
        "numerai_corr_tb200_mean": tb.mean(),
        "mmc_tb200_mean": scoring.per_era_correlation_contribution(
            preds, frame["meta"], target, eras, top_bottom=200
        )["prediction"].mean(),
        "fnc_mean": scoring.per_era_feature_neutral_corr(preds, frame[FEATURES[:3]], target, eras)["prediction"].mean(),
        "churn_mean": churn["prediction"].mean(),
        "churn_tb200_mean": scoring.per_era_churn(preds, previous, eras, top_bottom=200)[0]["prediction"].mean()
        if len(previous) // 4 >= 400 else None,
        "churn_n_ids": float(n_shared),
        "payout_mean": payout.mean(),
        "numerai_corr_mean_target_aux_20": scoring.per_era_numerai_corr(
            preds, frame["target_aux_20"], eras
        )["prediction"].mean(),
    }
    for name, value in expected.items():
        if value is None:
            assert name not in m, name  # eras of the previous version too small for TB200
            continue
        assert np.isfinite(m[name]), name
        assert m[name] == pytest.approx(value, abs=1e-12), name
    assert n_shared == len(previous) < len(frame)
    assert not np.isclose(m["numerai_corr_tb200_mean"], m["numerai_corr_mean"])

    client = mlflow.MlflowClient()
    assert "on 840 shared ids" in client.get_run(run_id).data.tags[ev.CHURN_TAG]
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="numerai_eval"))
    table = pd.read_csv(local / ev.DIAGNOSTICS_FILE, dtype={"era": str}).set_index("era")
    shown = {"corr", "mmc", "bmc", "cwmm", "fnc", "corr_tb200", "churn", "payout", "max_feature_exposure"}
    assert shown <= set(table.columns)
    np.testing.assert_allclose(table["bmc"], bmc.to_numpy(), atol=1e-12)
    assert (local / ev.DIAGNOSTICS_PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.artifacts["diagnostics"].content.size[0] > 500
    saved = pd.read_parquet(local / ev.PREDICTIONS_FILE)["prediction"]
    pd.testing.assert_series_equal(saved, preds["prediction"], check_names=False)


def test_churn_against_previous_version_then_champion(tracking, frame):
    frame = frame.drop(columns=["meta", "bench"])
    name = "diag_churn_model"
    client = mlflow.MlflowClient()
    uri = _log_model()
    run1, result1 = _evaluate(uri, frame, {"churn_model": name, "feature_cols": []})
    assert "churn_mean" not in result1.metrics
    assert "has no registered version" in client.get_run(run1).data.tags[ev.CHURN_TAG]
    v1 = mlflow.register_model(uri, name, tags={"numerai.run_id": run1})

    run2, result2 = _evaluate(uri, frame, {"churn_model": name, "feature_cols": []})
    # the same model: no churn, on every id
    assert result2.metrics["churn_mean"] == pytest.approx(0.0, abs=1e-12)
    assert result2.metrics["churn_n_ids"] == len(frame)
    assert f"{name}/{v1.version} (latest version)" in client.get_run(run2).data.tags[ev.CHURN_TAG]

    mlflow.register_model(uri, name, tags={"numerai.run_id": run2})
    client.set_registered_model_alias(name, "champion", v1.version)
    run3, _ = _evaluate(uri, frame, {"churn_model": name, "feature_cols": []})
    assert f"{name}/{v1.version} (@champion)" in client.get_run(run3).data.tags[ev.CHURN_TAG]


def test_no_registration_skips_churn_with_a_note(tracking, frame):
    frame = frame.drop(columns=["meta", "bench"])
    uri = _log_model()
    with pytest.warns(UserWarning, match="churn skipped: the run registers no model"):
        run_id, result = _evaluate(uri, frame, {"feature_cols": []})
    assert not [k for k in result.metrics if k.startswith("churn")]
    assert mlflow.MlflowClient().get_run(run_id).data.tags[ev.CHURN_TAG].startswith("churn skipped")


def test_meta_model_covering_too_few_ids_is_an_error_naming_it(tracking, frame):
    uri = _log_model()
    partial = frame["meta"].iloc[::3].rename("numerai_meta_model")
    frame = frame.drop(columns=["meta", "bench"])
    with pytest.raises(ScoringError, match=r"meta_model 'numerai_meta_model' covers 33\.\d% of the prediction ids"):
        _evaluate(uri, frame, {"meta_model": partial, "feature_cols": []})


def test_bad_new_config_values():
    small = make_frame(seed=6, n_eras=2, rows=10)
    for config, match in (({"top_bottom": 0}, "top_bottom"), ({"churn_model": ""}, "churn_model"),
                          ({"payout_preset": "x"}, "payout_preset"),
                          ({"benchmark": "nope"}, "benchmark column 'nope'")):
        with pytest.raises(ev.NumeraiEvaluationError, match=match):
            ev.parse_config(config, small, "target")
