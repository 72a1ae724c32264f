"""Bayesian NN family, posterior study and entry points (issue 6) on the small synthetic set."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from mlflow_numerai import scoring
from mlflow_numerai.data import io as data_io
from mlflow_numerai.families import bayes_nn as bnn
from mlflow_numerai.studies.bnn import js_divergence_matrix, study_posterior

# Small and fast, but enough steps that every prior learns the planted signal.
FAST = dict(epochs=6, lr=2e-2, seed=0, progress=False)
BATCH = 1024
HIDDEN = (16,)
S = 50


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: small nets on a shared 2-core machine run faster without contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(synthetic_dir):
    features = data_io.feature_columns(synthetic_dir, "small")
    train = data_io.read_split(synthetic_dir, "train")
    valid = data_io.read_split(synthetic_dir, "validation")
    return {
        "features": features,
        "train": train,
        "valid": valid,
        "x": bnn.feature_matrix(train, features),
        "y": train[["target"]].to_numpy(),
        "xv": bnn.feature_matrix(valid, features),
        "batches": bnn.array_batches(bnn.feature_matrix(train, features), train[["target"]].to_numpy(),
                                     batch_size=BATCH, seed=0),
    }


@pytest.fixture(scope="module")
def posteriors(data):
    """prior -> (fit, S posterior samples, study) for every prior."""
    out = {}
    for prior in bnn.PRIORS:
        spec = bnn.BNNSpec(len(data["features"]), HIDDEN, prior)
        fit = bnn.fit_svi(data["batches"], spec, **FAST)
        samples = bnn.sample_posterior(fit, S, seed=1)
        study = study_posterior(samples, data["xv"], data["valid"]["target"], data["valid"]["era"])
        out[prior] = (fit, samples, study)
    return out


# ------------------------------------------------------------------------------ acceptance


@pytest.mark.parametrize("prior", bnn.PRIORS)
def test_every_prior_positive_ensemble_corr_that_beats_the_average_member(posteriors, prior):
    fit, samples, study = posteriors[prior]
    m = study.metrics
    assert fit.losses[-1] < fit.losses[0]  # the ELBO improved
    assert m["ensemble_corr_mean"] > 0
    assert m["ensemble_corr_mean"] > m["member_corr_mean_mean"]
    assert m["member_corr_mean_std"] > 0  # members do differ
    assert len(study.members) == S and study.members["corr_mean"].notna().all()
    assert 0 <= m["burn_auc"] <= 1 and m["n_burn_eras"] == study.per_era["burn"].sum() > 0
    assert list(study.roc.columns[:2]) == ["fpr", "tpr"] and study.roc["tpr"].iloc[-1] == 1.0


def test_study_numbers_are_the_scoring_modules(posteriors, data):
    _, samples, study = posteriors["normal"]
    valid = data["valid"]
    mean, std = bnn.predictive_mean_std(samples, data["xv"])
    ens = scoring.per_era_numerai_corr(pd.DataFrame({"p": mean}, index=valid.index), valid["target"], valid["era"])
    np.testing.assert_allclose(study.per_era["ensemble_corr"].to_numpy(), ens["p"].reindex(study.per_era.index),
                               atol=1e-9)
    assert study.metrics["ensemble_sharpe"] == pytest.approx(float(scoring.sharpe(ens["p"])))
    member7 = bnn.batched_forward(torch.from_numpy(data["xv"]), samples)[:, 7].numpy()
    m7 = scoring.per_era_numerai_corr(pd.DataFrame({"m": member7}, index=valid.index), valid["target"], valid["era"])
    assert study.members.loc[7, "corr_mean"] == pytest.approx(m7["m"].mean(), abs=1e-6)
    unc = pd.Series(std, index=valid.index).groupby(valid["era"]).mean()
    auc = scoring.burn_auc(unc, ens["p"])
    assert study.metrics["burn_auc"] == pytest.approx(auc)
    np.testing.assert_allclose(study.prediction_std.to_numpy(), std, rtol=1e-5, atol=1e-7)


def test_js_divergence_matrix(posteriors):
    members = {p: posteriors[p][2].members for p in bnn.PRIORS}
    js = js_divergence_matrix(members)
    assert list(js.index) == list(js.columns) == list(bnn.PRIORS)
    assert np.allclose(js.to_numpy(), js.to_numpy().T) and np.all(np.diag(js.to_numpy()) == 0)
    a, b = members["uniform"]["corr_mean"], members["laplace"]["corr_mean"]
    direct = scoring.js_divergence_normal(a.mean(), a.std(), b.mean(), b.std())
    assert js.loc["uniform", "laplace"] == pytest.approx(direct)
    with pytest.raises(ValueError, match="baseline"):
        js_divergence_matrix({"baseline": pd.DataFrame({"corr_mean": [0.01]}), **members})


# ------------------------------------------------------------------------------ predictive


def naive_predictions(samples: bnn.PosteriorSamples, x: np.ndarray) -> np.ndarray:
    """One forward pass per sample, the obvious way (reference for the batched code)."""
    out = []
    for s in range(samples.n_samples):
        h = torch.from_numpy(x)
        for i, (w, b) in enumerate(zip(samples.weights, samples.biases)):
            h = h @ w[s] + b[s]
            if i < len(samples.weights) - 1:
                h = torch.relu(h)
        out.append(h[:, 0])
    return torch.stack(out, dim=1).numpy()


@pytest.mark.parametrize("hidden", [(), (8,), (8, 4), (8, 6, 4)])
def test_batched_forward_equals_one_pass_per_sample(hidden):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    widths = [5, *hidden, 1]
    samples = bnn.PosteriorSamples(
        [torch.randn(7, a, b) for a, b in zip(widths[:-1], widths[1:])], [torch.randn(7, b) for b in widths[1:]]
    )
    want = naive_predictions(samples, x)
    np.testing.assert_allclose(bnn.batched_forward(torch.from_numpy(x), samples).numpy(), want, rtol=1e-4, atol=1e-5)
    # small tiles: rows and samples split across many tiles, every cell written once
    rows, k = bnn.tile_shape(len(x), samples.n_samples, widths, tile_bytes=2048)
    assert rows < len(x) and k < samples.n_samples
    tiled = bnn.batched_forward(torch.from_numpy(x), samples, tile_bytes=2048).numpy()
    np.testing.assert_allclose(tiled, want, rtol=1e-4, atol=1e-5)
    w, b = samples.numpy()
    np.testing.assert_allclose(bnn.numpy_forward(x, w, b), want, rtol=1e-4, atol=1e-5)


def test_more_samples_than_the_budget_are_chunked_not_crashed(posteriors, data):
    _, samples, study = posteriors["laplace"]
    x = data["xv"]
    tiny = 64 * 1024  # far below S x N x widths
    cells = tiny // bnn.BLOCK_BYTES_PER_CELL
    assert cells < samples.n_samples * len(x)
    blocks = list(bnn.iter_predictive(samples, x, budget_bytes=tiny))
    assert len(blocks) > 1 and max(p.numel() for _, _, p in blocks) <= cells
    covered = np.zeros((len(x), samples.n_samples), dtype=int)
    for rows, cols, p in blocks:
        covered[rows, cols] += 1
        np.testing.assert_allclose(p.numpy(), naive_predictions(samples, x[rows])[:, cols], rtol=1e-4, atol=1e-6)
    assert (covered == 1).all()
    small = study_posterior(samples, x, data["valid"]["target"], data["valid"]["era"], budget_bytes=tiny)
    for key in ("ensemble_corr_mean", "member_corr_mean_mean", "member_sharpe_std", "burn_auc"):
        assert small.metrics[key] == pytest.approx(study.metrics[key], abs=1e-5)  # float32 sums differ by block
    with pytest.raises(ValueError, match="budget"):
        bnn.plan_chunks(10, 10, 0)


def test_era_blocks_never_split_an_era():
    starts = [0, 5, 9, 30, 31]
    blocks = bnn.posterior._row_blocks(40, 10, starts)
    assert blocks[0][0] == 0 and blocks[-1][1] == 40
    assert all(a in starts for a, _ in blocks)
    assert all(b == a2 for (_, b), (a2, _) in zip(blocks[:-1], blocks[1:]))


# ------------------------------------------------------------------------------ target models


@pytest.mark.parametrize("target_model", ["h1", "h2", "h3", "h4"])
def test_target_models_fold_into_the_scored_mean(data, target_model):
    import pyro
    from pyro import poutine

    train, _ = bnn.drop_nan_targets(data["train"], bnn.TARGET_MODELS[target_model])
    spec = bnn.BNNSpec(len(data["features"]), (8,), "normal", target_model)
    y = train[list(spec.targets)].to_numpy()
    fit = bnn.fit_svi(bnn.array_batches(bnn.feature_matrix(train, data["features"]), y), spec, epochs=1, seed=0,
                      progress=False)
    pyro.set_rng_seed(3)
    draw = {k: v.detach() for k, v in fit.guide().items()}
    x = torch.from_numpy(data["xv"][:50])
    means = poutine.condition(bnn.bnn_model, data=draw)(x, spec=spec)
    assert means.shape == (50, len(spec.targets))
    folded = bnn.collapse_draws({k: v.unsqueeze(0) for k, v in draw.items()}, spec, y_offset=0.25)
    np.testing.assert_allclose(bnn.batched_forward(x, folded)[:, 0].numpy(), means[:, 0].detach().numpy() + 0.25,
                               rtol=1e-4, atol=1e-6)
    if target_model == "h4":  # the 60-day mean feeds the 20-day mean through beta
        assert "h4.beta" in draw
    samples = bnn.sample_posterior(fit, 5)
    assert samples.widths[-1] == 1 and samples.n_samples == 5


def test_bad_parameters_name_the_choices():
    with pytest.raises(ValueError, match=r"unknown prior 'cauchy'.*'uniform', 'normal', 'laplace'"):
        bnn.BNNSpec(10, prior="cauchy")
    with pytest.raises(ValueError, match=r"unknown target_model 'h9'.*'single', 'h1', 'h2', 'h3', 'h4'"):
        bnn.BNNSpec(10, target_model="h9")
    with pytest.raises(ValueError, match="at most 3 hidden layers"):
        bnn.parse_hidden("8-8-8-8")
    with pytest.raises(ValueError, match="hidden sizes"):
        bnn.parse_hidden("8-x")
    assert bnn.parse_hidden("none") == () and bnn.parse_hidden("128-64") == (128, 64)
    with pytest.raises(ValueError, match="NaN"):
        bnn.array_batches(np.zeros((4, 2), np.float32), np.array([0.5, np.nan, 0.5, 0.5]))


def test_bnn_options_are_checked():
    with pytest.raises(ValueError, match="prior_scale"):
        bnn.BNNSpec(4, (3,), prior_scale=0.0)
    batches = bnn.array_batches(np.zeros((10, 4), np.float32), np.arange(10.0), batch_size=5)
    assert batches.batch_size == 5
    with pytest.raises(ValueError, match="final_lr_fraction"):
        bnn.fit_svi(batches, bnn.BNNSpec(4, (3,)), epochs=1, final_lr_fraction=0.0, progress=False)


def test_bnn_learning_rate_decays_to_the_final_fraction():
    rng = np.random.default_rng(0)
    batches = bnn.array_batches(rng.random((40, 4), dtype=np.float32) - 0.5, rng.random(40), batch_size=10)
    rates = []
    bnn.fit_svi(batches, bnn.BNNSpec(4, (3,)), epochs=3, lr=0.01, final_lr_fraction=0.1, progress=False,
                on_epoch=lambda e, m: rates.append(m["learning_rate"]))
    assert rates[0] < 0.01 and rates[-1] == pytest.approx(0.001)


def test_nan_target_rows_are_dropped_and_counted(data):
    train = data["train"].copy()
    train.iloc[:13, train.columns.get_loc("target_nomi_60")] = np.nan
    kept, dropped = bnn.drop_nan_targets(train, bnn.TARGET_MODELS["h3"])
    assert dropped == int(train["target_nomi_60"].isna().sum()) >= 13
    assert len(kept) == len(train) - dropped and kept["target_nomi_60"].notna().all()
    with pytest.raises(KeyError, match="target_missing"):
        bnn.drop_nan_targets(train, ["target", "target_missing"])


def test_training_from_the_era_stream(data, synthetic_dir, tmp_path):
    """The entry points train from the int8 era cache's stream (bounded memory): the same
    rows and target statistics as in memory, and the net learns."""
    from mlflow_numerai.data.cache import build_cache
    from mlflow_numerai.data.stream import BatchStream

    cache = build_cache(synthetic_dir / "train.parquet", tmp_path / "cache", data["features"], ["target"],
                        progress=False)
    batches = bnn.stream_batches(BatchStream(cache, BATCH, seed=0))
    arrays = data["batches"]
    assert (batches.n_rows, batches.n_features) == (arrays.n_rows, arrays.n_features)
    np.testing.assert_allclose(batches.y_mean, arrays.y_mean, rtol=1e-5)
    np.testing.assert_allclose(batches.y_std, arrays.y_std, rtol=1e-4)
    x, _ = next(iter(batches.epoch(0)))
    assert x.min() >= -0.5 and x.max() <= 0.5  # the same scale as feature_matrix
    fit = bnn.fit_svi(batches, bnn.BNNSpec(len(data["features"]), HIDDEN, "normal"), **FAST)
    assert fit.losses[-1] < fit.losses[0]
    study = study_posterior(bnn.sample_posterior(fit, S, seed=1), data["xv"], data["valid"]["target"],
                            data["valid"]["era"])
    assert study.metrics["ensemble_corr_mean"] > 0


def test_baseline_is_the_same_net_trained_by_mse(data):
    fit = bnn.fit_baseline(data["batches"], HIDDEN, **FAST)
    assert fit.samples.n_samples == 1 and fit.samples.widths == [len(data["features"]), 16, 1]
    assert fit.losses[-1] < fit.losses[0]
    study = study_posterior(fit.samples, data["xv"], data["valid"]["target"], data["valid"]["era"])
    assert study.metrics["ensemble_corr_mean"] > 0


# ------------------------------------------------------------------------------ predict.pkl


def test_predict_is_the_k_sample_ensemble_with_optional_std(posteriors, data):
    _, samples, _ = posteriors["uniform"]
    valid = data["valid"]
    predict = bnn.make_predict(data["features"], samples, k=20, budget_bytes=50_000)  # several row blocks
    shuffled = valid[list(reversed(valid.columns))]  # column order must not matter
    out = predict(shuffled)
    assert type(out) is pd.DataFrame and list(out.columns) == ["prediction"] and out.index.equals(valid.index)
    assert out["prediction"].between(0, 1).all() and out["prediction"].std() > 0
    mean, std = bnn.predictive_mean_std(samples.head(20), data["xv"])
    # the rank of the ensemble mean; numpy and torch round differently, so near ties may swap
    np.testing.assert_allclose(out["prediction"].to_numpy(), pd.Series(mean).rank(pct=True).to_numpy(),
                               atol=3 / len(valid))
    with_std = predict.with_params(valid, return_std=True)
    pd.testing.assert_series_equal(with_std["prediction"], out["prediction"])
    np.testing.assert_allclose(with_std["prediction_std"].to_numpy(), std, rtol=1e-4, atol=1e-7)
    with pytest.raises(KeyError, match=data["features"][0]):
        predict(valid.drop(columns=[data["features"][0]]))


BLOCKED_CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys
    BLOCKED = ("pyro", "mlflow", "mlflow_numerai", "torch")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this process")
            return None

    sys.meta_path.insert(0, Blocker())
    import pandas as pd
    predict = pd.read_pickle(sys.argv[1])
    live = pd.read_parquet(sys.argv[2])
    if "id" in live.columns:
        live = live.set_index("id")
    out = predict(live)
    std = predict.with_params(live, return_std=True)["prediction_std"]
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({"type": type(out).__name__, "columns": list(out.columns), "n": len(out),
                      "values": out["prediction"].tolist(), "std_mean": float(std.mean()), "loaded": loaded}))
    """
)


def test_predict_pkl_runs_where_pyro_mlflow_and_the_package_cannot_be_imported(posteriors, data, synthetic_dir,
                                                                                tmp_path):
    from mlflow_numerai.packaging import save_predict

    _, samples, _ = posteriors["normal"]
    predict = bnn.make_predict(data["features"], samples, k=10)
    path = save_predict(predict, tmp_path / "predict.pkl")
    script = tmp_path / "child.py"
    script.write_text(BLOCKED_CHILD)
    live_path = synthetic_dir / "live.parquet"
    result = subprocess.run([sys.executable, "-I", str(script), str(path), str(live_path)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    child = json.loads(result.stdout.strip().splitlines()[-1])
    live = data_io.read_split(synthetic_dir, "live")
    assert child["type"] == "DataFrame" and child["columns"] == ["prediction"] and child["n"] == len(live)
    assert child["loaded"] == []
    np.testing.assert_allclose(child["values"], predict(live)["prediction"].to_numpy())
    assert child["std_mean"] > 0


# ------------------------------------------------------------------------------ entry points


def _run_cli(args):
    from click.testing import CliRunner

    from mlflow_numerai.cli import main

    return CliRunner().invoke(main, ["train", *args], catch_exceptions=False)


def test_cli_rejects_unknown_prior_and_target_model(tracking_uri, synthetic_dir):
    result = _run_cli(["bayes-nn", "--data-dir", str(synthetic_dir), "--prior", "cauchy"])
    assert result.exit_code == 2 and "uniform" in result.output and "laplace" in result.output
    result = _run_cli(["bayes-nn", "--data-dir", str(synthetic_dir), "--target-model", "h7"])
    assert result.exit_code == 2 and "h4" in result.output and "single" in result.output
    result = _run_cli(["bnn-study", "--data-dir", str(synthetic_dir), "--priors", "normal,cauchy"])
    assert result.exit_code == 2 and "cauchy" in result.output and "laplace" in result.output
    result = _run_cli(["bayes-nn", "--data-dir", str(synthetic_dir), "--hidden", "8-8-8-8"])
    assert result.exit_code == 2 and "at most 3 hidden layers" in result.output


CLI_FAST = ["--epochs", "6", "--batch-size", "1024", "--lr", "2e-2", "--n-samples", "30", "--threads", "1"]


@pytest.mark.e2e
def test_bayes_nn_entry_point_logs_study_model_and_registers(tracking_uri, synthetic_dir):
    import mlflow

    result = _run_cli(["bayes-nn", "--data-dir", str(synthetic_dir), "--hidden", "16", "--prior", "laplace",
                       "--target-model", "h3", "--k-model-samples", "10", *CLI_FAST])
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient()
    run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    m = run.data.metrics
    assert run.data.tags["numerai.family"] == "bayes_nn"
    assert m["ensemble_corr_mean"] > m["member_corr_mean_mean"] and m["ensemble_corr_mean"] > 0
    for key in ("ensemble_sharpe", "member_corr_mean_std", "member_sharpe_mean", "member_sharpe_std", "burn_auc",
                "n_burn_eras", "numerai_corr_mean"):
        assert key in m
    train = data_io.read_split(synthetic_dir, "train")
    assert m["train_rows_dropped_nan"] == train["target_nomi_60"].isna().sum() > 0
    assert len(client.get_metric_history(run.info.run_id, "elbo_loss")) == 6
    files = {f.path for f in client.list_artifacts(run.info.run_id, "bnn")}
    assert {"bnn/per_era.csv", "bnn/members.csv", "bnn/roc.csv", "bnn/member_histograms.png", "bnn/roc.png"} <= files
    per_era = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="bnn/per_era.csv"))
    assert list(per_era.columns) == ["era", "ensemble_corr", "uncertainty", "burn"]
    assert per_era["ensemble_corr"].mean() == pytest.approx(m["ensemble_corr_mean"])
    assert per_era["burn"].sum() == m["n_burn_eras"]
    (version,) = client.search_model_versions("name='numerai-bayes-nn'")
    assert version.run_id == run.info.run_id
    model = mlflow.pyfunc.load_model(f"models:/numerai-bayes-nn/{version.version}")
    live = data_io.read_split(synthetic_dir, "live")
    plain = model.predict(live)
    assert list(plain.columns) == ["prediction"]
    with_std = model.predict(live, params={"return_std": True})
    assert list(with_std.columns) == ["prediction", "prediction_std"]
    pd.testing.assert_series_equal(with_std["prediction"], plain["prediction"])


@pytest.mark.e2e
def test_bnn_study_runs_priors_by_architectures_nested_with_js_matrix(tracking_uri, synthetic_dir):
    import mlflow

    result = _run_cli(["bnn-study", "--data-dir", str(synthetic_dir), "--priors", "uniform,laplace",
                       "--architectures", "none,8", *CLI_FAST])
    assert result.exit_code == 0, result.output
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parent) == 1 and parent[0].data.tags["numerai.family"] == "bnn_study"
    models = sorted(r.data.tags["bnn.model"] for r in children)
    assert models == ["baseline/8", "baseline/none", "laplace/8", "laplace/none", "uniform/8", "uniform/none"]
    js = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent[0].info.run_id,
                                                         artifact_path="bnn/js_divergence.csv"), index_col=0)
    assert sorted(js.index) == sorted(js.columns) == ["laplace/8", "laplace/none", "uniform/8", "uniform/none"]
    assert (js.to_numpy() >= 0).all() and np.allclose(js.to_numpy(), js.to_numpy().T)
    files = {f.path for f in mlflow.MlflowClient().list_artifacts(parent[0].info.run_id, "bnn")}
    assert {"bnn/js_divergence.csv", "bnn/js_divergence.png", "bnn/study_summary.csv"} <= files


def test_params_already_logged_by_mlflow_run_are_not_relogged(tracking_uri):
    """Regression: under `mlflow run` the entry point's params exist already ("512", not
    "512.0"); logging them again raised 'Changing param values is not allowed'."""
    import mlflow

    from mlflow_numerai.entrypoints.common import log_new_params

    with mlflow.start_run() as run:
        mlflow.log_params({"memory_budget_mb": "512", "epochs": "3"})
        log_new_params({"memory_budget_mb": 512.0, "epochs": 3, "guide": "AutoNormal"})
    params = mlflow.get_run(run.info.run_id).data.params
    assert params == {"memory_budget_mb": "512", "epochs": "3", "guide": "AutoNormal"}
