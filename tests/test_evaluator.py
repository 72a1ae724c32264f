"""The `numerai` evaluator plugin: through `mlflow.models.evaluate`, its numbers equal
`mlflow_numerai.scoring` called directly on the same data."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from mlflow_numerai import scoring
from mlflow_numerai.plugins import evaluator as ev

FEATURES = [f"feature_{i:02d}" for i in range(6)]
ARCH_METRICS = {"numerai_corr_mean", "numerai_corr_std", "numerai_corr_sharpe", "numerai_corr_max_drawdown"}


def make_frame(seed: int = 0, n_eras: int = 8, rows: int = 80) -> pd.DataFrame:
    """A small validation-like frame: id index, era, data_type, int8 features, two targets."""
    rng = np.random.default_rng(seed)
    n = n_eras * rows
    frame = pd.DataFrame(rng.integers(0, 5, (n, len(FEATURES))).astype(np.int8), columns=FEATURES)
    frame.index = pd.Index([f"id{i:05d}" for i in range(n)], name="id")
    frame.insert(0, "era", [f"{e:04d}" for e in np.repeat(np.arange(1, n_eras + 1), rows)])
    frame.insert(1, "data_type", "validation")
    signal = frame["feature_00"] - frame["feature_01"] + rng.normal(0, 2.5, n)
    frame["target"] = np.clip(np.round(signal / 2.5 + 2), 0, 4) / 4
    aux = np.clip(np.round(signal / 3 + 2 + rng.normal(0, 1, n)), 0, 4) / 4
    aux[rng.random(n) < 0.05] = np.nan  # a few unresolved ids, as auxiliary targets have
    frame["target_aux_20"] = aux
    return frame


def linear_predict(live: pd.DataFrame) -> pd.DataFrame:
    """A Numerai predict: selects its own features, returns `prediction` in [0, 1] by id."""
    score = live["feature_00"] * 1.0 - live["feature_01"] * 0.7 + live["feature_02"] * 0.1
    return (score.rank(pct=True)).to_frame("prediction")


class StrictModel(mlflow.pyfunc.PythonModel):
    """A pyfunc that, like Numerai's runner, refuses a frame that is not a live-like frame."""

    def predict(self, context, model_input, params=None):
        leaked = [c for c in model_input.columns if str(c).startswith("target") or c == "meta"]
        if leaked or "era" not in model_input or model_input.index.name != "id":
            raise AssertionError(f"not a live-like frame: leaked={leaked}, columns={list(model_input.columns)[:4]}")
        return linear_predict(model_input)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('eval') / 'mlflow.db'}"
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
def model_uri(store):
    mlflow.set_tracking_uri(store)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=StrictModel(), pip_requirements=["pandas"])
    return info.model_uri


def _run_evaluate(model_uri, frame, config=None, targets="target"):
    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(
            model_uri, data=frame, targets=targets, model_type="regressor", evaluators=["numerai"],
            evaluator_config={"numerai": config} if config is not None else None,
        )
    return run.info.run_id, result


def test_evaluator_is_registered():
    from mlflow.models.evaluation.evaluator_registry import _model_evaluation_registry

    assert _model_evaluation_registry._registry.get("numerai") is ev.NumeraiEvaluator


def test_numbers_equal_scoring_called_directly(tracking, model_uri):
    frame = make_frame()
    benchmark = (frame["feature_00"] + np.random.default_rng(1).normal(0, 1, len(frame))).rename("v5_lgbm")
    config = {"targets": ["target_aux_20"], "meta_model": benchmark}
    run_id, result = _run_evaluate(model_uri, frame, config)

    preds = linear_predict(frame.drop(columns=["target", "target_aux_20"]))
    eras = frame["era"]
    corr = scoring.per_era_numerai_corr(preds, frame["target"], eras)["prediction"]
    corr_aux = scoring.per_era_numerai_corr(preds, frame["target_aux_20"], eras)["prediction"]
    mmc = scoring.per_era_correlation_contribution(preds, benchmark, frame["target"], eras)["prediction"]
    exposure = scoring.max_feature_exposure(preds, frame[FEATURES], eras)["prediction"]
    expected = {
        "numerai_corr_mean": corr.mean(),
        "numerai_corr_std": corr.std(),
        "numerai_corr_sharpe": corr.mean() / corr.std(),
        "numerai_corr_max_drawdown": scoring.max_drawdown(corr),
        "numerai_corr_mean_target_aux_20": corr_aux.mean(),
        "numerai_corr_sharpe_target_aux_20": scoring.sharpe(corr_aux),
        "mmc_mean": mmc.mean(),
        "mmc_mean_target_aux_20": scoring.per_era_correlation_contribution(
            preds, benchmark, frame["target_aux_20"], eras
        )["prediction"].mean(),
        "max_feature_exposure": exposure,
        "n_eras": 8.0,
    }
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-12), name
    assert result.metrics["numerai_corr_mean"] > 0.05  # the model does find the planted signal

    # the same numbers are on the run, and the artifacts are there
    logged = mlflow.MlflowClient().get_run(run_id).data.metrics
    assert ARCH_METRICS | {"mmc_mean", "max_feature_exposure"} <= set(logged)
    for name, value in expected.items():
        assert logged[name] == pytest.approx(value, abs=1e-12), name
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "numerai_eval")}
    assert {"numerai_eval/per_era_corr.csv", "numerai_eval/cumulative_corr.png", "numerai_eval/per_era_mmc.csv",
            "numerai_eval/summary.csv"} <= files
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="numerai_eval"))
    table = pd.read_csv(local / "per_era_corr.csv", dtype={"era": str}).set_index("era")
    assert list(table.columns) == ["target", "target_aux_20"]
    np.testing.assert_allclose(table["target"], corr.to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(table["target_aux_20"], corr_aux.to_numpy(), rtol=0, atol=1e-12)
    assert (local / "cumulative_corr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.artifacts["cumulative_corr"].content.size[0] > 300


def test_main_target_other_than_target(tracking, model_uri):
    # metric names are unsuffixed for the main target, suffixed for the others
    frame = make_frame(seed=2).rename(columns={"target": "target_main_20"})
    frame = frame.drop(columns=["target_aux_20"]).assign(target=frame["target_aux_20"])
    _, result = _run_evaluate(model_uri, frame, {"targets": "target"}, targets="target_main_20")
    preds = linear_predict(frame)
    corr = scoring.per_era_numerai_corr(preds, frame["target_main_20"], frame["era"])["prediction"]
    assert result.metrics["numerai_corr_mean"] == pytest.approx(corr.mean(), abs=1e-12)
    assert "numerai_corr_mean_target" in result.metrics


def test_defaults_without_config(tracking, model_uri):
    frame = make_frame(seed=3)
    _, result = _run_evaluate(model_uri, frame)
    main = {f"numerai_corr_{k}" for k in ("smart_sharpe", "positive_share")} | {"fnc_mean", "fnc_smart_sharpe"}
    assert ARCH_METRICS | main | {"max_feature_exposure", "n_eras"} <= set(result.metrics)
    # no meta model, benchmark or previous version; eras of 80 rows are too small for TB200
    assert not [m for m in result.metrics if m.startswith(("mmc", "bmc", "cwmm", "churn", "payout")) or "_tb" in m]


def test_static_predictions_without_model(tracking):
    frame = make_frame(seed=4)
    frame["prediction"] = linear_predict(frame)["prediction"]
    with mlflow.start_run():
        result = mlflow.models.evaluate(
            data=frame, targets="target", predictions="prediction", model_type="regressor",
            evaluators=["numerai"], evaluator_config={"numerai": {"feature_cols": []}},
        )
    corr = scoring.per_era_numerai_corr(frame[["prediction"]], frame["target"], frame["era"])["prediction"]
    assert result.metrics["numerai_corr_sharpe"] == pytest.approx(scoring.sharpe(corr), abs=1e-12)
    assert "max_feature_exposure" not in result.metrics


def test_feature_neutral_option(tracking, model_uri):
    frame = make_frame(seed=5)
    _, result = _run_evaluate(model_uri, frame, {"feature_neutral": True, "feature_cols": FEATURES[:3]})
    preds = linear_predict(frame)
    fnc = scoring.per_era_feature_neutral_corr(preds, frame[FEATURES[:3]], frame["target"], frame["era"])
    assert result.metrics["fnc_mean"] == pytest.approx(fnc["prediction"].mean(), abs=1e-12)
    # predictions built from those very features have almost nothing left once neutralized
    assert abs(result.metrics["fnc_mean"]) < abs(result.metrics["numerai_corr_mean"])


def test_nan_features_count_as_the_middle_bin(tracking, model_uri):
    """Real Numerai features have NaN: exposure and FNC must not fail on them (they raised a
    ScoringError), and a NaN scores as bin 2."""
    frame = make_frame(seed=6)
    holes = frame.astype({"feature_03": "float64"})
    holes.iloc[::9, holes.columns.get_loc("feature_03")] = np.nan
    filled = holes.fillna({"feature_03": 2.0})
    config = {"feature_neutral": True, "feature_cols": FEATURES[:4]}
    _, with_nan = _run_evaluate(model_uri, holes, config)
    _, as_two = _run_evaluate(model_uri, filled, config)
    for key in ("max_feature_exposure", "fnc_mean", "numerai_corr_mean"):
        assert np.isfinite(with_nan.metrics[key])
        assert with_nan.metrics[key] == pytest.approx(as_two.metrics[key], abs=1e-12)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"era": "era"}, "unknown evaluator_config key"),
        ({"targets": ["target_nope"]}, "target_nope"),
        ({"targets": [3]}, "column name or a list"),
        ({"era_col": "round"}, "era column 'round'"),
        ({"meta_model": "meta"}, "meta_model column 'meta'"),
        ({"meta_model": pd.DataFrame({"a": [1.0], "b": [2.0]})}, "pick one"),
        ({"feature_cols": ["feature_99"]}, "feature column"),
        ({"feature_set": "small"}, "needs evaluator_config\\['data_dir'\\]"),
        ({"feature_neutral": True, "feature_cols": []}, "feature_neutral needs"),
        ({"max_filtered_ratio": 2}, "max_filtered_ratio"),
    ],
)
def test_bad_config_is_a_clear_error(config, match):
    with pytest.raises(ev.NumeraiEvaluationError, match=match):
        ev.parse_config(config, make_frame(seed=6, n_eras=2, rows=10), "target")


def test_bad_config_through_evaluate_logs_nothing(tracking, model_uri):
    with pytest.raises(ev.NumeraiEvaluationError, match="target_nope"):
        _run_evaluate(model_uri, make_frame(seed=6, n_eras=3), {"targets": ["target_nope"]})
    run = mlflow.MlflowClient().search_runs([mlflow.get_experiment_by_name("Default").experiment_id],
                                            order_by=["attributes.start_time DESC"], max_results=1)[0]
    assert not run.data.metrics
    assert not mlflow.MlflowClient().list_artifacts(run.info.run_id, "numerai_eval")


class NaNModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        out = linear_predict(model_input)
        out.iloc[0, 0] = np.nan
        return out


def test_bad_model_output_is_a_clear_error(tracking):
    with mlflow.start_run():
        uri = mlflow.pyfunc.log_model(name="nan_model", python_model=NaNModel(), pip_requirements=["pandas"]).model_uri
    with pytest.raises(ev.NumeraiEvaluationError, match="1 NaN or infinite predictions"):
        _run_evaluate(uri, make_frame(seed=7, n_eras=3))


def test_not_numerai_data_without_config_steps_aside(tracking, model_uri):
    frame = make_frame(seed=8, n_eras=3).drop(columns=["era"])
    with (
        pytest.warns(UserWarning, match="no 'era' column"),
        pytest.raises(MlflowException, match="could not be evaluated"),
    ):
        _run_evaluate(model_uri, frame)


def test_predictions_series_alignment():
    index = pd.Index(["a", "b", "c"], name="id")
    shuffled = pd.DataFrame({"prediction": [0.3, 0.1, 0.2]}, index=["c", "a", "b"])
    pd.testing.assert_series_equal(
        ev.predictions_series(shuffled, index), pd.Series([0.1, 0.2, 0.3], index=index, name="prediction")
    )
    assert ev.predictions_series(np.array([[0.1], [0.2], [0.3]]), index).index.equals(index)
    with pytest.raises(ev.NumeraiEvaluationError, match="not the input's"):
        ev.predictions_series(pd.Series([0.1, 0.2, 0.3], index=["x", "y", "z"]), index)
    with pytest.raises(ev.NumeraiEvaluationError, match="shape"):
        ev.predictions_series(np.zeros(4), index)
    with pytest.raises(ev.NumeraiEvaluationError, match="expected one column"):
        ev.predictions_series(pd.DataFrame({"a": [1.0] * 3, "b": [2.0] * 3}, index=index), index)


@pytest.mark.e2e
def test_through_log_numerai_model(tracking, synthetic_dir):
    from mlflow_numerai.data import io as data_io
    from mlflow_numerai.packaging import log_numerai_model

    features = data_io.feature_columns(synthetic_dir, "small")

    def predict(live_features: pd.DataFrame) -> pd.DataFrame:
        score = live_features[features].astype("float32").mean(axis=1)
        return score.rank(pct=True).to_frame("prediction")

    validation = data_io.read_split(synthetic_dir, "validation")
    benchmarks = pd.read_parquet(Path(synthetic_dir) / "validation_benchmark_models.parquet")
    with mlflow.start_run():
        info = log_numerai_model(predict, data_dir=synthetic_dir, feature_set="small")
    targets = [t for t in data_io.load_feature_metadata(synthetic_dir)["targets"] if t != "target"][:2]
    config = {"targets": targets, "meta_model": benchmarks.select_dtypes("number").iloc[:, 0], "feature_set": "small",
              "data_dir": str(synthetic_dir), "max_filtered_ratio": None}
    run_id, result = _run_evaluate(info.model_uri, validation, config)
    preds = predict(validation)
    corr = scoring.per_era_numerai_corr(preds, validation["target"], validation["era"])["prediction"]
    assert result.metrics["numerai_corr_mean"] == pytest.approx(corr.mean(), abs=1e-12)
    assert len(targets) == 2
    meta = config["meta_model"]
    for t in targets:  # each auxiliary target scored as the scoring module scores it
        aux = scoring.per_era_numerai_corr(preds, validation[t], validation["era"], max_filtered_ratio=None)
        assert result.metrics[f"numerai_corr_mean_{t}"] == pytest.approx(aux["prediction"].mean(), abs=1e-12), t
        mmc = scoring.per_era_correlation_contribution(preds, meta, validation[t], validation["era"],
                                                        max_filtered_ratio=None)
        assert result.metrics[f"mmc_mean_{t}"] == pytest.approx(mmc["prediction"].mean(), abs=1e-12), t
