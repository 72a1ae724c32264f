"""Ensembles of registered models: blend maths, the `ensemble` command, lineage, the self-contained
predict.pkl, validation and promotion, and bad members."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_numerai import ensembles
from mlflow_numerai.ensembles import EnsembleError, era_rank, fit_weights, neutralize_blend, rank_blend

# --------------------------------------------------------------------------- maths


def test_equal_weights_reproduce_a_hand_computed_rank_average():
    members = pd.DataFrame({"a": [0.1, 0.4, 0.3, 0.2], "b": [0.9, 0.1, 0.5, 0.5]}, index=list("wxyz"))
    # a ranks 1 4 3 2 -> (r - .5) / 4 = .125 .875 .625 .375; b ranks 4 1 2.5 2.5 -> .875 .125 .5 .5
    # mean .5 .5 .5625 .4375 -> ranks 2.5 2.5 4 1 -> .5 .5 .875 .125
    blend = rank_blend(members, [0.5, 0.5])
    assert blend.tolist() == [0.5, 0.5, 0.875, 0.125]
    assert list(blend.index) == list("wxyz")
    # per era: each era is ranked on its own (era 2 holds the same rows reversed)
    two = pd.concat([members, members.iloc[::-1].set_axis(list("pqrs"))])
    eras = pd.Series(["1"] * 4 + ["2"] * 4, index=two.index)
    per_era = rank_blend(two, [0.5, 0.5], eras)
    assert per_era.tolist() == [0.5, 0.5, 0.875, 0.125, 0.125, 0.875, 0.5, 0.5]
    # weights (1, 0) give member a's own tie-kept rank
    assert rank_blend(members, [1.0, 0.0]).tolist() == [0.125, 0.875, 0.625, 0.375]


def test_rank_blend_refuses_wrong_weight_count():
    with pytest.raises(EnsembleError, match="3 weight"):
        rank_blend(pd.DataFrame({"a": [1.0, 2.0], "b": [2.0, 1.0]}), [0.2, 0.3, 0.5])


def _toy(seed: int = 0, eras: int = 30, rows: int = 150):
    rng = np.random.default_rng(seed)
    n = eras * rows
    era = pd.Series(np.repeat([f"{e:04d}" for e in range(eras)], rows))
    signal = rng.normal(size=n)
    target = pd.Series(np.round(pd.Series(signal).groupby(era).rank(pct=True).to_numpy() * 4) / 4)
    members = pd.DataFrame({"good": signal + 2.5 * rng.normal(size=n), "other": signal + 3 * rng.normal(size=n),
                            "noise": rng.normal(size=n)})
    return members, target, era


@pytest.mark.parametrize("objective", ["corr", "sharpe"])
def test_fitted_weights_beat_every_member_and_equal_weights(objective):
    from mlflow_numerai.scoring import per_era_numerai_corr, sharpe

    members, target, era = _toy()
    fit = fit_weights(members, target, era, objective)
    assert (fit.weights >= 0).all() and fit.weights.sum() == pytest.approx(1.0)
    cols = {name: rank_blend(members, np.eye(3)[i], era) for i, name in enumerate(members.columns)}
    cols["equal"] = rank_blend(members, np.full(3, 1 / 3), era)
    cols["fitted"] = rank_blend(members, fit.weights, era)
    per_era = per_era_numerai_corr(pd.DataFrame(cols), target, era)
    score = per_era.mean() if objective == "corr" else sharpe(per_era)
    assert score["fitted"] >= score.drop("fitted").max()
    assert score["fitted"] > score["good"]  # two independent noisy views: blending them helps
    assert fit.value == pytest.approx(score["fitted"])
    assert fit.weights[2] < 0.05  # the pure-noise member is (nearly) dropped


def test_equal_objective_gives_equal_weights():
    members, target, era = _toy(eras=5, rows=40)
    assert fit_weights(members, target, era, "equal").weights.tolist() == pytest.approx([1 / 3] * 3)
    with pytest.raises(EnsembleError, match="objective"):
        fit_weights(members, target, era, "max")


def test_neutralize_blend_follows_numerai_tools_definition():
    members, _, era = _toy(eras=3, rows=60)
    features = pd.DataFrame({"f1": members["good"].round(), "f2": np.arange(len(members)) % 5}, dtype=float)
    features.iloc[3, 0] = np.nan  # counts as the middle bin 2
    blend = rank_blend(members, [0.5, 0.5, 0.0], era)
    out = neutralize_blend(blend, features, era, 0.5)
    # numerai-tools: v - p * [X 1] pinv([X 1]) v, per era; then ranked again
    x = features.fillna(2.0).to_numpy()
    expected = np.empty(len(blend))
    for e in era.unique():
        rows = (era == e).to_numpy()
        xe = np.hstack([x[rows], np.ones((rows.sum(), 1))])
        v = blend.to_numpy()[rows]
        expected[rows] = v - 0.5 * xe @ (np.linalg.pinv(xe, rcond=1e-6) @ v)
    expected = era_rank(pd.DataFrame({"p": expected}), era)["p"].to_numpy()
    np.testing.assert_allclose(out.to_numpy(), expected)
    # fully neutral: far less exposed to the feature than the blend
    full = neutralize_blend(blend, features, era, 1.0)
    exposure = lambda s: abs(np.corrcoef(s, features["f1"].fillna(2.0))[0, 1])  # noqa: E731
    assert exposure(full) < 0.1 < exposure(blend)


def test_member_errors_name_the_member():
    live = pd.DataFrame({"era": ["1"] * 4, "f": [1.0, 2.0, 3.0, 4.0]}, index=list("abcd"))

    def broken(frame):
        raise KeyError("feature_9")

    def wrong(frame):
        return frame[["f"]]

    predict = ensembles.make_ensemble_predict(
        [ensembles.Member("good/1", lambda f: f[["f"]].rename(columns={"f": "prediction"})),
         ensembles.Member("broken/2", broken)], [0.5, 0.5])
    with pytest.raises(RuntimeError, match="'broken/2' failed: KeyError"):
        predict(live)
    with pytest.raises(ValueError, match="'wrong/3' must return a DataFrame with a 'prediction' column"):
        ensembles.call_member("wrong/3", wrong, 1, live, None)
    with pytest.raises(EnsembleError, match="summing to 1"):
        ensembles.make_ensemble_predict([ensembles.Member("a", wrong)], [0.7])


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import mlflow

    root = tmp_path_factory.mktemp("ens_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_NUMERAI_CACHE", str(root / "cache"))
        mp.chdir(root)
        mlflow.set_tracking_uri(uri)
        yield uri
        if mlflow.active_run():
            mlflow.end_run()


def _register(name: str, predict, synthetic_dir, feature_set: str | None = None, **kwargs) -> str:
    import mlflow

    from mlflow_numerai.packaging import log_numerai_model

    with mlflow.start_run(run_name=name):
        info = log_numerai_model(predict, "model", data_dir=synthetic_dir if "input_example" not in kwargs else None,
                                 feature_set=feature_set, registered_model_name=name, **kwargs)
    return info.registered_model_version


@pytest.fixture(scope="module")
def members(store, synthetic_dir):
    """Three registered Numerai models on different feature sets and targets: ridge on `small`,
    ridge on `medium`, and ridge on `all` fitted to another target."""
    from mlflow_numerai.data.io import feature_columns, read_split
    from mlflow_numerai.families.baseline import train_baseline

    train = read_split(synthetic_dir, "train")
    out = {}
    for name, fs, target, alpha in (("ens-ridge-small", "small", "target", 0.01),
                                    ("ens-ridge-medium", "medium", "target", 0.01),
                                    ("ens-ridge-janet", "all", "target_janet_20", 1.0)):
        predict, _ = train_baseline(train, feature_columns(synthetic_dir, fs), target=target, alpha=alpha)
        out[name] = (_register(name, predict, synthetic_dir, fs), predict)
    return out


def _run(args: list[str]):
    from mlflow_numerai.cli import main

    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def built(store, synthetic_dir, members):
    """The ensemble of the three members, fitted for mean corr, registered as `ens-blend`."""
    import mlflow

    from mlflow_numerai.entrypoints.ensemble import build_ensemble

    mlflow.MlflowClient().set_registered_model_alias("ens-ridge-small", "champion", "1")
    uris = ["models:/ens-ridge-small@champion", "models:/ens-ridge-medium/1", "models:/ens-ridge-janet/latest"]
    return build_ensemble("ens-blend", uris, data_dir=str(synthetic_dir), objective="corr")


def test_fitted_blend_scores_at_least_the_best_member(built):
    table = built["side_by_side"]
    members = table.drop(index="ensemble")
    assert list(members.index) == ["ens-ridge-small/1", "ens-ridge-medium/1", "ens-ridge-janet/1"]
    assert table.loc["ensemble", "numerai_corr_mean"] >= members["numerai_corr_mean"].max()
    assert {"numerai_corr_sharpe", "mmc_mean", "max_feature_exposure"} <= set(table.columns)
    weights = np.array(list(built["weights"].values()))
    assert (weights >= 0).all() and weights.sum() == pytest.approx(1.0)
    corr = built["member_corr"]
    assert corr.shape == (3, 3) and np.allclose(np.diag(corr), 1.0)


def test_version_carries_lineage_in_tags_metadata_and_run(built):
    import mlflow

    from mlflow_numerai.entrypoints import ensemble as cmd

    client = mlflow.MlflowClient()
    mv = client.get_model_version("ens-blend", built["version"])
    lineage = json.loads(mv.tags[cmd.LINEAGE_TAG])
    assert [(m["name"], m["version"]) for m in lineage] == [
        ("ens-ridge-small", "1"), ("ens-ridge-medium", "1"), ("ens-ridge-janet", "1")]
    assert lineage[0]["uri"] == "models:/ens-ridge-small@champion"
    assert lineage[0]["pinned_uri"] == "models:/ens-ridge-small/1"
    assert [m["feature_set"] for m in lineage] == ["small", "medium", "all"]
    assert json.loads(mv.tags[cmd.WEIGHTS_TAG]) == pytest.approx(built["weights"])
    assert json.loads(mv.tags[cmd.NEUTRALIZATION_TAG])["proportion"] == 0.0
    assert mv.tags["numerai.family"] == "ensemble"
    meta = mlflow.models.get_model_info(f"models:/ens-blend/{built['version']}").metadata
    assert meta["numerai_profile"] == "numerai"
    assert [m["weight"] for m in meta["ensemble"]["members"]] == pytest.approx(list(built["weights"].values()))
    run = client.get_run(built["run_id"])
    assert run.data.tags["numerai.family"] == "ensemble"
    side_by_side = built["side_by_side"]
    assert run.data.metrics["numerai_corr_mean"] == pytest.approx(side_by_side.loc["ensemble", "numerai_corr_mean"])
    files = {f.path for f in client.list_artifacts(built["run_id"], "ensemble")}
    assert {"ensemble/weights.csv", "ensemble/side_by_side.csv", "ensemble/per_era_corr.csv",
            "ensemble/member_corr.csv", "ensemble/members_vs_blend.png"} <= files


BLOCKED_CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys

    BLOCKED = {"mlflow", "mlflow_numerai", "pyro"}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"import of {name!r} is blocked")
            return None

    sys.meta_path.insert(0, Blocker())
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
    out = predict(live)
    json.dump({"type": f"{type(out).__module__}.{type(out).__qualname__}",
               "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}, sys.stdout)
    out.to_parquet(out_path)
    """
)


def test_predict_pkl_runs_without_mlflow_and_equals_the_members_blend(built, members, synthetic_dir, tmp_path):
    from mlflow_numerai.data.io import read_split
    from mlflow_numerai.packaging import check_numerai_output, download_predict_pkl, load_predict

    pkl = download_predict_pkl(f"models:/ens-blend/{built['version']}", tmp_path)
    script = tmp_path / "child.py"
    script.write_text(BLOCKED_CHILD)
    out_path = tmp_path / "out.parquet"
    argv = [sys.executable, "-I", str(script), str(pkl), str(synthetic_dir / "live.parquet"), str(out_path)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"type": "pandas.DataFrame", "loaded": []}
    out = pd.read_parquet(out_path)
    live = read_split(synthetic_dir, "live")
    check_numerai_output(out, live)
    # the blend by hand from each member's own predict.pkl output (live is one era)
    own = {}
    for name in ("ens-ridge-small", "ens-ridge-medium", "ens-ridge-janet"):
        member = load_predict(download_predict_pkl(f"models:/{name}/1", tmp_path / name))
        own[f"{name}/1"] = member(live)["prediction"]
    ranks = pd.DataFrame({k: (v.rank() - 0.5) / len(v) for k, v in own.items()})
    mean = sum(ranks[k] * w for k, w in built["weights"].items())
    expected = ((mean.rank() - 0.5) / len(mean)).rename("prediction")
    pd.testing.assert_series_equal(out["prediction"], expected)


def test_ensemble_is_validated_and_promoted_like_any_model(built, synthetic_dir):
    import mlflow

    version = built["version"]
    result = _run(["validate", f"models:/ens-blend/{version}", "--data-dir", str(synthetic_dir), "--json"])
    report = json.loads(result.output.strip().splitlines()[-1])
    assert result.exit_code == 0 and report["status"] == "Success", result.output
    mv = mlflow.MlflowClient().get_model_version("ens-blend", version)
    assert mv.tags["numerai.upload_state"] == "Success"
    refused = _run(["promote", "ens-blend", "--version", version, "--min-corr", "0.99"])
    assert refused.exit_code == 1 and "min_corr" in refused.output
    promoted = _run(["promote", "ens-blend", "--version", version, "--alias", "champion", "--min-corr", "0.0"])
    assert promoted.exit_code == 0, promoted.output
    assert mlflow.MlflowClient().get_registered_model("ens-blend").aliases["champion"] == version


def test_neutralized_equal_ensemble_via_the_command(store, members, synthetic_dir, tmp_path):
    import mlflow

    from mlflow_numerai.packaging import download_predict_pkl, load_predict

    result = _run(["ensemble", "ens-neutral", "--member", "models:/ens-ridge-small/1,models:/ens-ridge-medium/1",
                   "--data-dir", str(synthetic_dir), "--objective", "equal",
                   "--neutralize-feature-set", "small", "--proportion", "0.5"])
    assert result.exit_code == 0, result.output
    assert "weights (equal): ens-ridge-small/1=0.5000, ens-ridge-medium/1=0.5000" in result.output
    mv = mlflow.MlflowClient().get_model_version("ens-neutral", "1")
    assert json.loads(mv.tags["numerai.ensemble.neutralization"])["feature_set"] == "small"
    from mlflow_numerai.data.io import feature_columns, read_split

    live = read_split(synthetic_dir, "live")
    predict = load_predict(download_predict_pkl("models:/ens-neutral/1", tmp_path))
    a = load_predict(download_predict_pkl("models:/ens-ridge-small/1", tmp_path / "a"))(live)["prediction"]
    b = load_predict(download_predict_pkl("models:/ens-ridge-medium/1", tmp_path / "b"))(live)["prediction"]
    blend = rank_blend(pd.DataFrame({"a": a, "b": b}), [0.5, 0.5], live["era"])
    expected = neutralize_blend(blend, live[feature_columns(synthetic_dir, "small")], live["era"], 0.5)
    pd.testing.assert_series_equal(predict(live)["prediction"], expected)


# --------------------------------------------------------------------------- bad members


def _registered(name: str) -> bool:
    import mlflow

    return bool(mlflow.MlflowClient().search_registered_models(f"name = '{name}'"))


def test_forecast_member_is_refused_by_name_and_nothing_registered(store, members, synthetic_dir):
    def forecast(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"realgdp": [1.0, 2.0]})

    _register("ens-varmax", forecast, synthetic_dir, input_example=pd.DataFrame({"steps": [2]}),
              profile="forecast", output_contract={"columns": ["realgdp"]})
    result = _run(["ensemble", "ens-bad-1", "--member", "models:/ens-ridge-small/1",
                   "--member", "models:/ens-varmax/1", "--data-dir", str(synthetic_dir)])
    assert result.exit_code == 1
    assert "'models:/ens-varmax/1' is a 'forecast' model, not a Numerai model" in result.output
    assert not _registered("ens-bad-1")


def test_member_failing_on_live_is_named_and_nothing_registered(store, members, synthetic_dir):
    from mlflow_numerai.data.io import read_split

    def fragile(live_features: pd.DataFrame) -> pd.DataFrame:
        if len(live_features) > 20:
            raise MemoryError("too many rows for this model")
        return live_features[["feature_0001"]].rank(pct=True).astype(float).set_axis(["prediction"], axis=1)

    example = read_split(synthetic_dir, "live").head(10)
    _register("ens-fragile", fragile, synthetic_dir, input_example=example)
    result = _run(["ensemble", "ens-bad-2", "--member", "models:/ens-ridge-small/1",
                   "--member", "models:/ens-fragile/1", "--data-dir", str(synthetic_dir)])
    assert result.exit_code == 1
    assert "member 'models:/ens-fragile/1' fails on live" in result.output
    assert "MemoryError: too many rows" in result.output and "nothing registered" in result.output
    assert not _registered("ens-bad-2")


@pytest.mark.parametrize("args, message", [
    (["--member", "models:/ens-ridge-small/1"], "at least 2 members"),
    (["--member", "models:/ens-ridge-small/1", "--member", "models:/ens-ridge-small/1"], "given twice"),
    (["--member", "models:/ens-ridge-small/1", "--member", "models:/ens-nowhere/1"], "'models:/ens-nowhere/1'"),
    (["--member", "models:/ens-ridge-small/1,models:/ens-ridge-small@champion"], "same model version"),
])
def test_bad_member_lists_are_refused(store, members, built, synthetic_dir, args, message):
    result = _run(["ensemble", "ens-bad-3", *args, "--data-dir", str(synthetic_dir)])
    assert result.exit_code != 0 and message in result.output
    assert not _registered("ens-bad-3")
