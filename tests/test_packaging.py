"""predict.pkl in and out, the pyfunc from code, and refusals at logging time."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from mlflow_numerai import packaging
from mlflow_numerai.packaging import (
    OutputContractError,
    PackagingError,
    check_numerai_output,
    download_predict_pkl,
    load_predict,
    log_numerai_model,
    pickled_modules,
    requirements_of,
    save_predict,
)
from mlflow_numerai.packaging.contract import CHECKS

FEATURES = [f"feature_{i:02d}" for i in range(8)]


@pytest.fixture(scope="module")
def live() -> pd.DataFrame:
    """A small live-like frame: id index, era, data_type, int8 features, NaN target."""
    rng = np.random.default_rng(3)
    n = 120
    frame = pd.DataFrame(
        rng.integers(0, 5, (n, len(FEATURES))).astype("int8"),
        columns=FEATURES,
        index=pd.Index([f"n{i:05d}" for i in range(n)], name="id"),
    )
    frame.insert(0, "era", "0500")
    frame.insert(1, "data_type", "live")
    frame["target"] = np.float32(np.nan)
    return frame


def make_linear_predict(weights: np.ndarray):
    """A valid Numerai predict: rank of a linear score of FEATURES selected by name."""
    features = list(FEATURES)

    def predict(live_features: pd.DataFrame) -> pd.DataFrame:
        x = live_features[features].to_numpy(dtype=np.float64)
        return pd.Series(x @ weights, index=live_features.index).rank(pct=True).to_frame("prediction")

    return predict


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite tracking store (and working directory for ./mlruns) for this module's tests:
    creating a store costs seconds, and these tests only add models and runs."""
    import mlflow

    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        yield root
        if mlflow.active_run():
            mlflow.end_run()


@pytest.fixture(scope="module")
def predict():
    return make_linear_predict(np.linspace(-1, 1, len(FEATURES)))


def registered_names() -> list[str]:
    import mlflow

    return [m.name for m in mlflow.MlflowClient().search_registered_models()]


# --------------------------------------------------------------------------- save / load


def test_save_load_roundtrip_is_atomic_and_equal(tmp_path, predict, live):
    path = save_predict(predict, tmp_path / "sub" / "predict.pkl")
    assert path.exists()
    assert sorted(os.listdir(path.parent)) == ["predict.pkl"]  # no temp file left behind
    loaded = load_predict(path)
    pd.testing.assert_frame_equal(loaded(live), predict(live))
    # what Numerai does
    pd.testing.assert_frame_equal(pd.read_pickle(path)(live), predict(live))


def test_package_code_is_pickled_by_value(live):
    import cloudpickle

    from mlflow_numerai.families.baseline import RidgeFit, ridge_scores

    fit = RidgeFit(list(FEATURES), np.ones(len(FEATURES)), 0.0, np.zeros(len(FEATURES)))

    def predict(live_features):  # uses a module-level function and class of mlflow_numerai
        scores = ridge_scores(fit, live_features[fit.features].to_numpy())
        return pd.DataFrame({"prediction": scores}, index=live_features.index).rank(pct=True)

    # control: plain cloudpickle refers to mlflow_numerai by name (needs it installed to load)
    assert any(m.startswith("mlflow_numerai") for m in pickled_modules(cloudpickle.dumps(predict)))
    data = packaging.dumps_predict(predict)
    assert not any(m.startswith("mlflow_numerai") for m in pickled_modules(data))
    assert "mlflow_numerai" not in cloudpickle.list_registry_pickle_by_value()  # undone after the dump
    pd.testing.assert_frame_equal(cloudpickle.loads(data)(live), predict(live))


@pytest.mark.parametrize(
    "fn, expected",
    [
        (lambda: None, "takes 0"),
        (lambda a, b, c: None, "takes 3"),
        (lambda live, *, return_std=False: None, "keyword-only"),
        (lambda live, **kw: None, "keyword-only"),
    ],
)
def test_save_refuses_bad_arity(tmp_path, fn, expected):
    with pytest.raises(PackagingError, match=expected):
        save_predict(fn, tmp_path / "predict.pkl")
    assert not (tmp_path / "predict.pkl").exists()


def test_save_refuses_unpicklable_closure_naming_it(tmp_path):
    with open(tmp_path / "handle.txt", "w") as handle:
        fn = lambda live: handle.write("x")  # noqa: E731
        with pytest.raises(PackagingError, match=r"cannot be pickled.*'handle'.*TextIOWrapper"):
            save_predict(fn, tmp_path / "predict.pkl")
    assert not (tmp_path / "predict.pkl").exists()
    assert os.listdir(tmp_path) == ["handle.txt"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(PackagingError, match="does not exist"):
        load_predict(tmp_path / "missing.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(PackagingError, match="cannot unpickle .*bad.pkl"):
        load_predict(bad)


def test_requirements_follow_what_the_pickle_imports():
    from scipy import special

    def predict(live_features):
        return pd.DataFrame({"prediction": special.expit(live_features["feature_00"].to_numpy())})

    modules = pickled_modules(packaging.dumps_predict(predict))
    assert any(m.startswith("scipy") for m in modules)
    reqs = requirements_of(modules)
    assert {"scipy", "numpy", "pandas", "cloudpickle"} <= set(reqs)
    import scipy

    assert reqs["scipy"] == scipy.__version__
    assert "mlflow" not in reqs


# --------------------------------------------------------------------------- output contract


def _good(live):
    return pd.DataFrame({"prediction": np.linspace(0.1, 0.9, len(live))}, index=live.index)


@pytest.mark.parametrize(
    "make, check",
    [
        (lambda live: None, "none"),
        (lambda live: _good(live)["prediction"], "type"),
        (lambda live: _good(live).iloc[:0], "empty"),
        (lambda live: _good(live).rename(columns={"prediction": "pred"}), "columns"),
        (lambda live: _good(live).assign(extra=1.0), "columns"),
        (lambda live: _good(live).astype({"prediction": "object"}), "dtype"),
        (lambda live: _good(live).iloc[1:], "index"),
        (lambda live: _good(live).iloc[::-1], "index"),
        (lambda live: _good(live).assign(prediction=np.r_[np.nan, np.ones(len(live) - 1) / 2]), "nan"),
        (lambda live: _good(live) * 2, "range"),
        (lambda live: _good(live) * 0 + 0.5, "constant"),
    ],
)
def test_output_contract_names_the_failed_check(live, make, check):
    check_numerai_output(_good(live), live)  # the control passes
    with pytest.raises(OutputContractError) as info:
        check_numerai_output(make(live), live)
    assert info.value.check == check
    assert check in CHECKS


def test_output_contract_is_standalone():
    """contract.py imports nothing of the package: the sandbox child loads it by path, without it."""
    import subprocess
    import sys

    from mlflow_numerai.packaging import contract

    source = contract.__file__
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('c', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); sys.modules['c'] = m; spec.loader.exec_module(m); "
            "assert not [n for n in sys.modules if n.startswith('mlflow')], sorted(sys.modules); "
            "print(sorted(m.CHECKS))")
    site_paths = [p for p in sys.path if p.endswith("site-packages")]
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path += {site_paths!r}; {code}", source],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'constant'" in out.stdout


def test_packaging_errors_are_input_errors():
    from mlflow_numerai.errors import InputError

    assert issubclass(PackagingError, InputError) and issubclass(PackagingError, ValueError)
    assert issubclass(OutputContractError, PackagingError)


# --------------------------------------------------------------------------- MLflow model


def test_pyfunc_equals_raw_pickle_equals_function(store, tmp_path, predict, live):
    import mlflow

    with mlflow.start_run() as run:
        info = log_numerai_model(
            predict, input_example=live, feature_set="small", data_version="test-v1",
            registered_model_name="pkg-test", metadata={"note": "kept"},
        )
    shuffled = live[list(np.random.default_rng(0).permutation(live.columns))]
    expected = predict(live)
    model = mlflow.pyfunc.load_model(info.model_uri)
    pd.testing.assert_frame_equal(model.predict(shuffled), expected)
    for uri, dst in [
        (info.model_uri, "a"),
        (f"runs:/{run.info.run_id}/model", "b"),
        ("models:/pkg-test/1", "c"),
    ]:
        pkl = download_predict_pkl(uri, tmp_path / dst)
        assert pkl.name == "predict.pkl"
        pd.testing.assert_frame_equal(pd.read_pickle(pkl)(shuffled), expected)
    mlflow.MlflowClient().set_registered_model_alias("pkg-test", "champion", "1")
    pkl = download_predict_pkl("models:/pkg-test@champion", tmp_path / "d")
    pd.testing.assert_frame_equal(load_predict(pkl)(shuffled), expected)

    meta = mlflow.models.get_model_info(info.model_uri).metadata
    assert meta["numerai_profile"] == "numerai"
    assert meta["python_version"].count(".") == 1
    assert meta["feature_set"] == "small" and meta["data_version"] == "test-v1"
    assert meta["note"] == "kept"
    assert {"cloudpickle", "numpy", "pandas"} <= set(meta["requirements"])
    assert meta["output_contract"]["columns"] == ["prediction"]
    inputs = {c.name: c.type.name for c in info.signature.inputs.inputs}
    assert inputs["feature_00"] == "double" and "target" not in inputs  # takes int8 bins and NaN
    assert [c.name for c in info.signature.outputs.inputs] == ["prediction"]


@pytest.mark.parametrize(
    ("environ", "frozen"),
    [
        ({}, False),  # a notebook or a batch job: the collector is left alone
        ({"__pyfunc_model_path__": "/m"}, True),  # `mlflow models serve`'s workers
        ({"__pyfunc_model_path__": "/m", "MLFLOW_NUMERAI_GC_FREEZE": "0"}, False),
        ({"MLFLOW_NUMERAI_GC_FREEZE": "1"}, True),
    ],
)
def test_a_served_model_freezes_the_loaded_objects_out_of_the_collector(
    store, predict, live, monkeypatch, environ, frozen
):
    """A full collection over a scoring server's objects takes hundreds of ms and set the served
    p99; loading in the server freezes them (gc.freeze), and only there unless asked."""
    import gc

    import mlflow

    with mlflow.start_run():
        info = log_numerai_model(predict, input_example=live)
    for name in ("__pyfunc_model_path__", "MLFLOW_NUMERAI_GC_FREEZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    gc.unfreeze()
    try:
        model = mlflow.pyfunc.load_model(info.model_uri)
        assert (gc.get_freeze_count() > 0) is frozen
        pd.testing.assert_frame_equal(model.predict(live), predict(live))
    finally:
        gc.unfreeze()


def test_pyfunc_takes_nan_and_float_features(store, live):
    """Real Numerai features have NaN (a float column once read): a signature inferred from int8
    bins as "integer" made MLflow refuse such a frame before predict ever saw it."""
    import mlflow

    def predict(live_features: pd.DataFrame) -> pd.DataFrame:
        x = np.nan_to_num(live_features[FEATURES].to_numpy(dtype=np.float64, na_value=np.nan), nan=2.0)
        return pd.Series(x @ np.arange(len(FEATURES)), index=live_features.index).rank(pct=True).to_frame("prediction")

    with mlflow.start_run():
        info = log_numerai_model(predict, input_example=live)
    model = mlflow.pyfunc.load_model(info.model_uri)
    with_nan = live.astype({"feature_03": "float64"})
    with_nan.iloc[:7, with_nan.columns.get_loc("feature_03")] = np.nan
    as_two = live.copy()
    as_two.iloc[:7, as_two.columns.get_loc("feature_03")] = 2
    pd.testing.assert_frame_equal(model.predict(with_nan), predict(as_two))
    pd.testing.assert_frame_equal(model.predict(live.astype({"feature_05": "float32"})), predict(live))
    pd.testing.assert_frame_equal(model.predict(live), predict(live))  # int8 still fine


def test_download_refuses_a_model_that_is_not_ours(store, tmp_path):
    import mlflow

    class Plain(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    info = mlflow.pyfunc.log_model(
        name="plain", python_model=Plain(), input_example=pd.DataFrame({"a": [1]}), pip_requirements=["mlflow"]
    )
    with pytest.raises(PackagingError, match="not a mlflow_numerai model"):
        download_predict_pkl(info.model_uri, tmp_path / "out")
    with pytest.raises(PackagingError, match="cannot read model"):
        download_predict_pkl("models:/no-such-model/1", tmp_path / "out")


def test_params_reach_with_params_and_default_is_plain(store, tmp_path, live):
    import mlflow

    base = make_linear_predict(np.arange(len(FEATURES), dtype=float))

    def predict(live_features):
        return base(live_features)

    def with_std(live_features, return_std=False):
        out = base(live_features)
        return out.assign(prediction_std=0.25) if return_std else out

    predict.with_params = with_std
    info = log_numerai_model(predict, input_example=live)
    assert {p.name: p.default for p in info.signature.params.params} == {"return_std": False}
    model = mlflow.pyfunc.load_model(info.model_uri)
    pd.testing.assert_frame_equal(model.predict(live), predict(live))
    with_uncertainty = model.predict(live, params={"return_std": True})
    pd.testing.assert_frame_equal(with_uncertainty, base(live).assign(prediction_std=0.25))
    # Numerai still runs the plain one-parameter function
    assert packaging.predict_arity(load_predict(download_predict_pkl(info.model_uri, tmp_path))) == 1


def test_two_parameter_predict_gets_benchmarks_and_empty_frame(store, tmp_path, live):
    import mlflow

    base = make_linear_predict(np.ones(len(FEATURES)))
    calls = tmp_path / "calls"  # the served copy is unpickled: it records its arguments on disk
    calls.mkdir()

    def predict(live_features, live_benchmark_models):
        pd.to_pickle((live_features.index, live_benchmark_models), calls / f"{len(list(calls.iterdir()))}.pkl")
        return base(live_features)

    info = log_numerai_model(predict, input_example=live)
    model = mlflow.pyfunc.load_model(info.model_uri)
    for old in calls.iterdir():  # calls made while logging are not the served one
        old.unlink()
    pd.testing.assert_frame_equal(model.predict(live), base(live))
    # one call, with an empty frame (no benchmark models) indexed exactly like the live rows
    ((index, benchmarks),) = [pd.read_pickle(p) for p in calls.iterdir()]
    assert index.equals(live.index) and benchmarks.shape == (len(live), 0)
    assert benchmarks.index.equals(live.index)


def test_forecast_profile_records_contract_and_skips_numerai_checks(store, tmp_path):
    import mlflow

    request = pd.DataFrame({"steps": [3]})

    def forecast(frame):
        steps = int(frame["steps"].iloc[0])
        return pd.DataFrame({"realgdp": np.arange(steps, dtype=float), "cpi": np.ones(steps)})

    contract = {"columns": ["realgdp", "cpi"], "max_horizon": 12}
    info = log_numerai_model(forecast, "varmax", input_example=request, profile="forecast", output_contract=contract)
    meta = mlflow.models.get_model_info(info.model_uri).metadata
    assert meta["numerai_profile"] == "forecast" and meta["output_contract"] == contract
    # no input schema: MLflow would cast and check each column per request; predict checks its own
    signature = mlflow.models.get_model_info(info.model_uri).signature
    assert signature.inputs is None and signature.outputs.input_names() == ["realgdp", "cpi"]
    out = mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame({"steps": [5]}))
    pd.testing.assert_frame_equal(out, forecast(pd.DataFrame({"steps": [5]})))
    with pytest.raises(PackagingError, match="output_contract"):
        log_numerai_model(forecast, input_example=request, profile="forecast")


@pytest.mark.parametrize(
    "bad, message",
    [
        ("zero", "takes 0"),
        ("three", "takes 3"),
        ("open_file", "cannot be pickled.*handle"),
        ("series", r"invalid predictions \(type\).*Series"),
        ("imports_mlflow", r"imports \['mlflow'\]"),
        ("raises", "predict raised ZeroDivisionError"),
    ],
)
def test_bad_predict_is_refused_at_logging_and_nothing_is_registered(
    store, tmp_path, live, bad, message
):
    import mlflow

    handle = open(tmp_path / "handle.txt", "w")
    candidates = {
        "zero": lambda: None,
        "three": lambda a, b, c: None,
        "open_file": lambda live_features: handle.write("x"),
        "series": lambda live_features: live_features["feature_00"].rank(pct=True),
        "imports_mlflow": lambda live_features: _good(live_features).assign(
            prediction=_good(live_features)["prediction"] * (mlflow is not None)
        ),
        "raises": lambda live_features: 1 / 0,
    }
    try:
        experiment_id = mlflow.MlflowClient().create_experiment(f"bad-{bad}")
        with mlflow.start_run(experiment_id=experiment_id) as run, pytest.raises(PackagingError, match=message):
            log_numerai_model(candidates[bad], input_example=live, registered_model_name="bad-model")
    finally:
        handle.close()
    assert "bad-model" not in registered_names()
    client = mlflow.MlflowClient()
    assert client.list_artifacts(run.info.run_id) == []
    assert client.search_logged_models(experiment_ids=[run.info.experiment_id]) == []


def test_numerai_profile_needs_an_example(predict):
    with pytest.raises(PackagingError, match="data_dir or input_example"):
        log_numerai_model(predict)
    with pytest.raises(PackagingError, match="profile must be one of"):
        log_numerai_model(predict, profile="tabular")


def test_code_from_a_local_module_is_flagged(store, live):
    """A helper imported from a local module (not an installed package) is pickled by reference:
    Numerai's runner could not import it, so logging warns, naming the module."""
    fn = lambda live_features: _good(live_features)  # noqa: E731 - _good lives in this test module
    modules = pickled_modules(packaging.dumps_predict(fn))
    assert packaging.local_modules(modules) == [__name__.split(".")[0]]
    assert packaging.local_modules({"numpy.core", "pandas", "copyreg", "mlflow_numerai.scoring"}) == []
    with pytest.warns(UserWarning, match=f"imports \\['{__name__.split('.')[0]}'\\] by reference"):
        log_numerai_model(fn, input_example=live)
