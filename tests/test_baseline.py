"""The ridge baseline: maths, the self-contained predict.pkl, and the `train baseline` command."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_numerai.data.io import feature_columns, read_split
from mlflow_numerai.families.baseline import fit_ridge, gram_statistics, train_baseline
from mlflow_numerai.packaging import check_numerai_output, save_predict


def test_ridge_without_penalty_is_least_squares():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, (400, 6)).astype(np.int8)
    y = x @ rng.normal(size=6) + 0.3 + rng.normal(scale=0.1, size=400)
    fit = fit_ridge(x, y, 0.0, [f"f{i}" for i in range(6)])
    design = np.c_[x, np.ones(len(x))]
    expected = np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(fit.coef, expected[:-1], atol=1e-6)
    assert fit.intercept == pytest.approx(expected[-1], abs=1e-6)
    shrunk = fit_ridge(x, y, 10.0, fit.features)
    assert np.linalg.norm(shrunk.coef) < 0.5 * np.linalg.norm(fit.coef)


def test_gram_statistics_do_not_depend_on_the_chunking():
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 5, (101, 4)).astype(np.int8), rng.normal(size=101)
    whole, chunked = gram_statistics(x, y, chunk_rows=1000), gram_statistics(x, y, chunk_rows=7)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b)


def test_fit_refuses_bad_input():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="NaN"):
        fit_ridge(x, np.r_[np.nan, np.zeros(9)], 0.1, ["a", "b"])
    with pytest.raises(ValueError, match="alpha"):
        fit_ridge(x, np.zeros(10), -1.0, ["a", "b"])
    with pytest.raises(ValueError, match="one row per target"):
        fit_ridge(x, np.zeros(9), 0.1, ["a", "b"])
    with pytest.raises(KeyError, match="target_x"):
        train_baseline(pd.DataFrame({"a": [1, 2]}), ["a"], target="target_x")


@pytest.fixture(scope="module")
def trained(synthetic_dir):
    features = feature_columns(synthetic_dir, "small")
    train = read_split(synthetic_dir, "train", columns=[*features, "target"])
    predict, fit = train_baseline(train, features, alpha=0.01)
    return predict, fit


def test_predict_selects_features_by_name_and_learns_the_signal(synthetic_dir, trained):
    predict, fit = trained
    validation = read_split(synthetic_dir, "validation")
    shuffled = validation[list(np.random.default_rng(5).permutation(validation.columns))]
    out = predict(validation)
    pd.testing.assert_frame_equal(predict(shuffled), out)
    check_numerai_output(out, validation)
    assert out["prediction"].between(0, 1, inclusive="right").all()
    frame = validation[["era", "target"]].assign(prediction=out["prediction"])
    per_era = frame.groupby("era").apply(lambda g: g["prediction"].corr(g["target"], method="spearman"))
    assert per_era.mean() > 0.01, per_era.describe()
    with pytest.raises(KeyError, match=fit.features[0]):
        predict(validation.drop(columns=[fit.features[0]]))


def test_nan_features_count_as_the_middle_bin(synthetic_dir, trained):
    """Real Numerai features have NaN: it must neither poison the fit (NaN coefficients) nor
    give NaN predictions; it counts as bin 2 in both."""
    _, fit = trained
    features = fit.features
    train = read_split(synthetic_dir, "train", columns=[*features, "target"])
    holes = train.astype(dict.fromkeys(features[:3], "float64"))
    holes.iloc[::7, [holes.columns.get_loc(f) for f in features[:3]]] = np.nan
    filled = holes.fillna(dict.fromkeys(features[:3], 2.0))
    predict_holes, fit_holes = train_baseline(holes, features, alpha=0.01)
    _, fit_filled = train_baseline(filled, features, alpha=0.01)
    assert np.isfinite(fit_holes.coef).all()
    np.testing.assert_allclose(fit_holes.coef, fit_filled.coef)
    live = read_split(synthetic_dir, "live")
    live_holes = live.astype({features[0]: "float64"})
    live_holes.iloc[:20, live_holes.columns.get_loc(features[0])] = np.nan
    out = predict_holes(live_holes)
    check_numerai_output(out, live_holes)  # no NaN prediction
    pd.testing.assert_frame_equal(out, predict_holes(live_holes.fillna({features[0]: 2.0})))


# A separate Python in isolated mode where mlflow, mlflow_numerai and pyro cannot be imported.
CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys

    BLOCKED = {"mlflow", "mlflow_numerai", "pyro"}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"import of {name!r} is blocked")
            return None

    sys.meta_path.insert(0, Blocker())
    import numpy as np
    import pandas as pd

    for name in BLOCKED:
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"the blocker let {name} through")

    pkl, live_path, out_path = sys.argv[1:]
    predict = pd.read_pickle(pkl)
    live = pd.read_parquet(live_path)
    if "id" in live.columns:
        live = live.set_index("id")
    live = live[list(np.random.default_rng(11).permutation(live.columns))]
    out = predict(live)
    json.dump({
        "type": f"{type(out).__module__}.{type(out).__qualname__}",
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
    }, sys.stdout)
    out.to_parquet(out_path)
    """
)


def test_predict_pkl_runs_without_mlflow_mlflow_numerai_or_pyro(tmp_path, synthetic_dir, trained):
    predict, _ = trained
    pkl = save_predict(predict, tmp_path / "predict.pkl")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out_path = tmp_path / "out.parquet"
    proc = subprocess.run(
        [sys.executable, "-I", str(script), str(pkl), str(synthetic_dir / "live.parquet"), str(out_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report == {"type": "pandas.DataFrame", "loaded": []}
    out = pd.read_parquet(out_path)
    live = read_split(synthetic_dir, "live")
    check_numerai_output(out, live)  # one float column, live ids, [0, 1], no NaN, not constant
    pd.testing.assert_frame_equal(out, predict(live))


# --------------------------------------------------------------------------- the command


@pytest.mark.parametrize(
    "args, option",
    [
        (["--alpha", "-1"], "'--alpha'"),
        (["--alpha", "abc"], "'--alpha'"),
        (["--feature-set", "enormous"], "'--feature-set'"),
        (["--target", "target_nobody_20"], "'--target'"),
    ],
)
def test_bad_option_names_the_parameter(tracking_uri, synthetic_dir, args, option):
    from mlflow_numerai.entrypoints.baseline import baseline

    result = CliRunner().invoke(baseline, ["--data-dir", str(synthetic_dir), *args])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for {option}" in result.output
    assert "Traceback" not in result.output


def test_missing_data_dir_names_the_parameter(tracking_uri, tmp_path):
    from mlflow_numerai.entrypoints.baseline import baseline

    result = CliRunner().invoke(baseline, ["--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "Invalid value for '--data-dir'" in result.output and "nowhere" in result.output


def test_baseline_command_logs_evaluates_and_registers(tracking_uri, synthetic_dir, tmp_path, monkeypatch, trained):
    import mlflow

    from mlflow_numerai.entrypoints.baseline import baseline
    from mlflow_numerai.packaging import download_predict_pkl

    monkeypatch.chdir(tmp_path)
    client = mlflow.MlflowClient()
    # as under `mlflow run`: the run exists and holds the parameters as the user spelled them
    project_run = client.create_run("0")
    client.log_param(project_run.info.run_id, "data_dir", f"{synthetic_dir}/")
    client.log_param(project_run.info.run_id, "alpha", "1e-2")
    monkeypatch.setenv("MLFLOW_RUN_ID", project_run.info.run_id)
    result = CliRunner().invoke(
        baseline,
        ["--data-dir", f"{synthetic_dir}/", "--alpha", "1e-2", "--registered-model-name", "baseline-test"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    (version,) = client.search_model_versions("name = 'baseline-test'")
    assert version.run_id == project_run.info.run_id
    run = client.get_run(version.run_id)
    assert run.data.params["resolved_data_dir"] == str(synthetic_dir)
    assert run.data.tags["numerai.family"] == "baseline"
    assert run.data.params["feature_set"] == "small"
    assert run.data.metrics["numerai_corr_mean"] > 0
    assert "mmc_mean" in run.data.metrics and "max_feature_exposure" in run.data.metrics
    assert "numerai_corr_mean_target_nomi_60" in run.data.metrics  # every target scored
    # MMC against the data's meta_model.parquet, BMC against its first benchmark model (issue 14)
    assert run.data.params["mmc_benchmark"] == "numerai_meta_model"
    assert {"bmc_mean", "cwmm_mean", "numerai_corr_smart_sharpe", "payout_mean"} <= set(run.data.metrics)
    assert "train_seconds" in run.data.metrics
    pkl = download_predict_pkl("models:/baseline-test/1", tmp_path / "upload")
    live = read_split(synthetic_dir, "live")
    expected = trained[0](live)
    pd.testing.assert_frame_equal(pd.read_pickle(pkl)(live), expected)
    # the pyfunc takes the whole live frame, or just era + the feature set it reads
    model = mlflow.pyfunc.load_model("models:/baseline-test/1")
    pd.testing.assert_frame_equal(model.predict(live), expected)
    small = ["era", *feature_columns(synthetic_dir, "small")]
    pd.testing.assert_frame_equal(model.predict(live[small[::-1]]), expected)
    assert set(model.metadata.signature.inputs.required_input_names()) == set(small)
