"""The dashboard's data functions (no Streamlit), against a store filled like the project fills it."""

from __future__ import annotations

import socket
import sys
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_numerai.cli import dashboard as dashboard_cli
from mlflow_numerai.dashboard import queries


def _none(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


@pytest.fixture(scope="module")
def store(dashboard_store):
    return dashboard_store


@pytest.fixture(scope="module")
def runs(store):
    return queries.runs_table(store[0])


@pytest.fixture(scope="module")
def versions(store):
    return queries.model_versions(store[0])


def test_runs_table_lists_family_runs_with_their_metrics(store, runs):
    uri, logged = store
    assert set(runs["family"]) == {"baseline", "keras_stream", "bnn_study", "varmax"}
    # 1 baseline + 2 keras + 1 study (3 priors + its baseline) + 1 varmax parent + 4 candidates;
    # validation runs have no family
    assert len(runs) == 13
    row = runs.set_index("run_id").loc[logged.baseline]
    for key, value in logged.metrics[logged.baseline].items():
        assert row[f"metrics.{key}"] == pytest.approx(value)
    assert runs["start_time"].is_monotonic_decreasing
    nested = runs.set_index("run_id").loc[list(logged.bnn.values()), "parent_run_id"]
    assert set(nested) == {logged.study}


def test_runs_table_filters_families_and_rejects_unknown(store):
    keras = queries.runs_table(store[0], ["keras_stream"])
    assert sorted(keras["run_id"]) == sorted(store[1].keras)
    with pytest.raises(ValueError, match="unknown families \\['kerass'\\]"):
        queries.runs_table(store[0], ["kerass"])


def test_model_versions_states_aliases_and_metrics(store, versions):
    _, logged = store
    assert len(versions) == len(logged.versions)
    by_key = versions.set_index(["name", "version"])
    for key, info in logged.versions.items():
        row = by_key.loc[key]
        assert _none(row["upload_state"]) == info["state"]
        assert _none(row["upload_reason"]) == info["reason"]
        assert row["run_id"] == info["run_id"]
        assert _none(row["validation_run_id"]) == info["validation_run"]
        assert row["color"] == queries.STATE_COLORS.get(info["state"] or "", "gray")
    assert by_key.loc[("numerai-baseline", 1), "aliases"] == "champion"
    assert by_key.loc[("numerai-baseline", 2), "aliases"] == ""
    assert by_key.loc[("numerai-baseline", 1), "validation_corr_mean"] == pytest.approx(0.0123)
    assert by_key.loc[("numerai-baseline", 1), "numerai_corr_mean"] == pytest.approx(
        logged.metrics[logged.baseline]["numerai_corr_mean"]
    )
    assert by_key.loc[("numerai-bnn", 1), "family"] == "bnn_study"
    assert pd.isna(by_key.loc[("numerai-keras", 1), "upload_state"])


def test_upload_history_is_every_transition_in_order(store, versions):
    _, logged = store
    history = queries.upload_history(versions)
    for (name, version), info in logged.versions.items():
        own = history[(history["name"] == name) & (history["version"] == version)]
        assert list(own["state"]) == [h["state"] for h in info["history"]]
        assert own["time"].is_monotonic_increasing
    failed = history[(history["name"] == "numerai-baseline") & (history["version"] == 2)].iloc[-1]
    assert (failed["state"], failed["reason"]) == ("Failed", "invalid_output:range")


def test_state_counts(versions):
    counts = queries.state_counts(versions)
    assert counts.to_dict() == {"Running": 1, "Success": 1, "Failed": 1, "Error": 1, "Not validated": 1}


def test_promotion_audit_reads_the_registry_tags(store, versions):
    audit = queries.promotion_audit(store[0], versions)
    promoted = audit[audit["event"] == "promoted"]
    assert len(promoted) == 1
    row = promoted.iloc[0]
    assert (row["name"], row["version"], row["alias"]) == ("numerai-baseline", 1, "champion")
    assert "upload_state Success ✓" in row["detail"]
    assert pd.notna(row["time"])


def test_validation_log_is_found_and_read(store, versions):
    uri, _ = store
    run_id = versions.set_index(["name", "version"]).loc[("numerai-baseline", 2), "validation_run_id"]
    assert queries.find_log_artifacts(uri, run_id) == ["numerai_upload/child_live.log"]
    assert "7 values above 1.0" in queries.read_artifact_text(uri, run_id, "numerai_upload/child_live.log")
    assert queries.read_artifact_text(uri, run_id, "numerai_upload/nope.log") is None


def test_bnn_table_matches_logged_metrics(store, runs):
    _, logged = store
    table = queries.bnn_table(runs).set_index("prior")
    assert sorted(table.index) == sorted([*logged.bnn, "baseline (MSE)"])
    for prior, run_id in logged.bnn.items():
        for key, value in logged.metrics[run_id].items():
            assert table.loc[prior, key] == pytest.approx(value)
        assert table.loc[prior, "ensemble_beats_members"]
        assert table.loc[prior, "hidden"] == "128-64-64"
        assert table.loc[prior, "model"] == f"{prior}/128-64-64"
    # the study's baseline has no members: nothing to beat
    assert table.loc["baseline (MSE)", "ensemble_beats_members"] is None
    assert queries.bnn_table(runs[runs["family"] == "varmax"]).empty


def test_bnn_artifacts_round_trip(store):
    uri, logged = store
    run_id = logged.bnn["normal"]
    pd.testing.assert_frame_equal(queries.bnn_members(uri, run_id), logged.members[run_id])  # `sample` index dropped
    per_era = queries.bnn_per_era(uri, run_id)
    assert per_era["burn"].dtype == bool
    assert list(per_era["burn"]) == list(logged.bnn_per_era[run_id]["burn"])
    assert list(per_era["era"]) == list(logged.bnn_per_era[run_id]["era"])  # zero-padded strings kept
    roc = queries.bnn_roc(uri, run_id)
    assert list(roc.columns) == ["fpr", "tpr"] and len(roc) == 6
    js = queries.js_divergence(uri, logged.study)
    pd.testing.assert_frame_equal(js, logged.js, check_names=False)
    long = queries.js_long(js)
    assert len(long) == 9
    assert long.set_index(["model_a", "model_b"]).loc[("uniform", "laplace"), "js"] == pytest.approx(
        logged.js.loc["uniform", "laplace"]
    )
    # a run without the artifact gives an empty frame, not an error
    assert queries.bnn_members(uri, logged.baseline).empty
    assert queries.js_divergence(uri, logged.baseline).empty


def test_training_history_and_summary(store):
    uri, logged = store
    history = queries.metric_history(uri, logged.keras)
    summary = queries.training_summary(history).set_index("run_id")
    for run_id, hist in logged.keras_history.items():
        own = history[(history["run_id"] == run_id) & (history["key"] == "loss")].sort_values("step")
        assert list(own["value"]) == pytest.approx(hist["loss"])
        corr = np.array(hist["val_corr_mean"])
        assert summary.loc[run_id, "best_epoch"] == int(corr.argmax())
        assert summary.loc[run_id, "best_val_corr_mean"] == pytest.approx(corr.max())
        assert summary.loc[run_id, "epochs"] == len(corr)
        assert summary.loc[run_id, "mean_rows_per_sec"] == pytest.approx(np.mean(hist["rows_per_sec"]))
        assert summary.loc[run_id, "final_loss"] == pytest.approx(hist["loss"][-1])


def test_varmax_forecast_order_search_and_coverage(store):
    uri, logged = store
    fc = queries.varmax_forecast(uri, logged.varmax)
    assert sorted(fc["variable"].unique()) == ["realcons", "realgdp"]
    gdp = fc[fc["variable"] == "realgdp"]
    assert list(gdp["actual"]) == pytest.approx(list(logged.forecast["realgdp_actual"]))
    assert list(gdp["period"]) == list(logged.forecast["period"])
    cov = queries.forecast_coverage(fc).set_index("variable")
    w = logged.forecast
    rmse = np.sqrt(((w["realgdp_actual"] - w["realgdp_forecast"]) ** 2).mean())
    inside = ((w["realgdp_actual"] >= w["realgdp_lower"]) & (w["realgdp_actual"] <= w["realgdp_upper"])).mean()
    assert cov.loc["realgdp", "rmse"] == pytest.approx(rmse)
    assert cov.loc["realgdp", "coverage"] == pytest.approx(inside)
    pd.testing.assert_frame_equal(queries.varmax_order_search(uri, logged.varmax), logged.order_search)


def test_tidy_forecast_reads_prefix_layout_and_rejects_unknown_columns():
    wide = pd.DataFrame({"period": ["a", "b"], "forecast_x": [1.0, 2.0], "actual_x": [1.5, 2.5]})
    tidy = queries.tidy_forecast(wide)
    assert list(tidy["forecast"]) == [1.0, 2.0] and tidy["lower"].isna().all()
    with pytest.raises(ValueError, match="no '<variable>_<kind>' columns"):
        queries.tidy_forecast(pd.DataFrame({"period": ["a"], "value": [1.0]}))


def test_per_era_corr_and_stats_match_the_logged_evaluation(store):
    uri, logged = store
    per_era = queries.per_era_corr(uri, [logged.baseline, logged.bnn["uniform"]])
    base = per_era[per_era["run_id"] == logged.baseline]
    assert list(base["corr"]) == pytest.approx(list(logged.per_era[logged.baseline]["target"]))
    assert list(base["cumulative_corr"]) == pytest.approx(list(np.cumsum(logged.per_era[logged.baseline]["target"])))
    # a BNN run without the evaluator's table falls back to its own per-era ensemble corr
    bnn = per_era[per_era["run_id"] == logged.bnn["uniform"]]
    assert list(bnn["corr"]) == pytest.approx(list(logged.bnn_per_era[logged.bnn["uniform"]]["ensemble_corr"]))
    stats = queries.era_stats(per_era).set_index("run_id")
    m = logged.metrics[logged.baseline]
    assert stats.loc[logged.baseline, "corr_mean"] == pytest.approx(m["numerai_corr_mean"])
    assert stats.loc[logged.baseline, "sharpe"] == pytest.approx(m["numerai_corr_sharpe"])
    assert stats.loc[logged.baseline, "max_drawdown"] == pytest.approx(m["numerai_corr_max_drawdown"])
    assert queries.per_era_corr(uri, [logged.varmax]).empty
    # the study's baseline: per-era table without uncertainty
    assert len(queries.per_era_corr(uri, [logged.study_baseline])) == len(logged.per_era[logged.baseline])


def test_era_stats_skip_an_era_without_a_score():
    """A constant era scores NaN; the stats are those of the other eras (the evaluator's
    summaries), not NaN for the whole run."""
    corr = [0.02, np.nan, -0.01, 0.03, 0.01]
    per_era = pd.DataFrame({"run_id": "r", "era": [f"{i:04d}" for i in range(5)], "corr": corr})
    row = queries.era_stats(per_era).iloc[0]
    scored = pd.Series(corr).dropna()
    assert row["eras"] == 4
    assert row["corr_mean"] == pytest.approx(scored.mean())
    assert row["sharpe"] == pytest.approx(scored.mean() / scored.std(ddof=1))
    assert row["max_drawdown"] == pytest.approx(0.01)
    assert row["positive_eras"] == pytest.approx(0.75)


def test_study_runs_are_the_top_level_studies(store, runs):
    assert list(queries.study_runs(runs)["run_id"]) == [store[1].study]


def test_compare_table_puts_runs_side_by_side(store, runs):
    _, logged = store
    table = queries.compare_table(runs, [logged.baseline, logged.keras[0]])
    assert table.index[0] == "numerai_corr_mean"
    assert table.shape[1] == 2
    assert table.iloc[0, 0] == pytest.approx(logged.metrics[logged.baseline]["numerai_corr_mean"])
    assert np.isnan(table.loc["val_loss"].iloc[0]) and not np.isnan(table.loc["val_loss"].iloc[1])


# ---- broken and empty stores --------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_tracking_missing_sqlite_file_is_empty_and_not_created(tmp_path):
    db = tmp_path / "mlflow.db"
    assert queries.check_tracking(f"sqlite:///{db}") is False
    assert not db.exists()


def test_check_tracking_errors_name_the_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(queries.TrackingUnavailable, match="directory .* does not exist"):
        queries.check_tracking(f"sqlite:///{tmp_path}/nope/mlflow.db")
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(queries.TrackingUnavailable, match=f"cannot reach tracking store '{uri}'"):
        queries.check_tracking(uri)
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not a sqlite database" * 100)
    with pytest.raises(queries.TrackingUnavailable, match="garbage.db"):
        queries.check_tracking(f"sqlite:///{bad}")
    with pytest.raises(queries.TrackingUnavailable, match="non-empty string"):
        queries.check_tracking("")


def test_check_tracking_ok(store):
    assert queries.check_tracking(store[0]) is True


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("sqlite:////abs/x.db", "/abs/x.db"),
        ("sqlite:///rel.db", "rel.db"),
        ("http://h:5000", None),
        ("sqlite:///:memory:", None),
        ("sqlite:////tmp/my%20runs/mlflow.db", "/tmp/my runs/mlflow.db"),  # what SQLAlchemy opens
        ("sqlite:////abs/x.db?timeout=30", "/abs/x.db"),
        ("sqlite://", None),
        ("postgresql://u:p@h/db", None),
    ],
)
def test_sqlite_path(uri, expected):
    """One reading of a SQLite URI for the whole package (the dashboard, the store lock and the
    study store beside it): the file SQLAlchemy, hence MLflow, opens."""
    from mlflow_numerai import tracking

    assert queries.sqlite_path is tracking.sqlite_path
    got = queries.sqlite_path(uri)
    assert (str(got) if got else None) == expected


def test_the_study_store_lands_beside_a_percent_encoded_tracking_store(tmp_path):
    """`sqlite:////.../my%20runs/mlflow.db` is the file in `my runs`; the study's default storage
    was put in a directory literally named `my%20runs`."""
    from mlflow_numerai.studies.optuna import default_storage

    folder = tmp_path / "my runs"
    uri = f"sqlite:///{str(folder).replace(' ', '%20')}/mlflow.db"
    assert default_storage(uri) == f"sqlite:///{folder / 'optuna.db'}"


def test_parse_time_and_history_tolerate_bad_input():
    assert queries.parse_time("2026-01-02T03:04:05.123+00:00") == pd.Timestamp("2026-01-02 03:04:05.123", tz="UTC")
    epoch = pd.Timestamp(datetime.fromtimestamp(1_767_000_000, UTC))  # seconds, by the stdlib
    assert queries.parse_time(1_767_000_000) == epoch and queries.parse_time("1767000000") == epoch
    assert queries.parse_time(1_767_000_000_250) == epoch + pd.Timedelta(milliseconds=250)  # milliseconds
    assert pd.isna(queries.parse_time("not a time")) and pd.isna(queries.parse_time(None))
    assert queries.parse_history("{not json") == []
    assert queries.parse_history('{"state": "Success"}') == []
    assert queries.parse_history('[{"state": "Pending"}, 3, {"x": 1}]') == [{"state": "Pending"}]


def test_format_gates():
    raw = (
        '[{"name": "upload_state", "value": "Success", "passed": true}, '
        '{"name": "min_corr", "value": 0.005, "threshold": 0.01, "passed": false}]'
    )
    assert queries.format_gates(raw) == "upload_state Success ✓; min_corr 0.005 ≥ 0.01 ✗"
    assert queries.format_gates("oops") == "oops"


# ---- the command --------------------------------------------------------------------------


def test_dashboard_command_runs_streamlit_on_the_packaged_app(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(dashboard_cli.subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 0)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    args = ["--tracking-uri", uri, "--port", "8611", "--headless"]
    result = CliRunner().invoke(dashboard_cli.dashboard_command, args)
    assert result.exit_code == 0, result.output
    cmd, env = calls[0]
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert cmd[4] == str(dashboard_cli.app_path()) and dashboard_cli.app_path().is_file()
    assert cmd[cmd.index("--server.port") + 1] == "8611"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[-2:] == ["--tracking-uri", uri]
    assert env["MLFLOW_TRACKING_URI"] == uri


def test_dashboard_command_rejects_bad_port():
    result = CliRunner().invoke(dashboard_cli.dashboard_command, ["--port", "70000"])
    assert result.exit_code == 2
    assert "--port" in result.output and "70000" in result.output


def test_dashboard_is_routed_from_the_main_cli():
    from mlflow_numerai.cli import main

    result = CliRunner().invoke(main, ["dashboard", "--help"])
    assert result.exit_code == 0
    assert "--tracking-uri" in result.output and "--port" in result.output
