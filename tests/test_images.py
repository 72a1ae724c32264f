"""Image-exact judging (issue 12 item 3): a pickle runs in a cached environment holding the exact
pins of Numerai's runtime image. Tests marked `pypi` download from PyPI (skipped, with the reason,
when it cannot be reached)."""

from __future__ import annotations

import importlib.machinery
import json
import os
import socket
import sys
import threading
import time
import types
from functools import lru_cache

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from mlflow_numerai.conventions import IMAGE_ENV
from mlflow_numerai.registry.states import FAILED, SUCCESS
from mlflow_numerai.uploads import images
from mlflow_numerai.uploads.validate import ValidationArgumentError, validate

THIS = f"{sys.version_info.major}.{sys.version_info.minor}"


@lru_cache(maxsize=1)
def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pypi():
    if not _pypi_reachable():
        pytest.skip("PyPI (pypi.org:443) is unreachable: image environments cannot be built")


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """One image cache for the module: the py3.11 environment is built once and reused."""
    return tmp_path_factory.mktemp("images")


@pytest.fixture()
def use_root(image_root, monkeypatch):
    monkeypatch.setattr(images, "cache_dir", lambda: image_root)
    monkeypatch.delenv(IMAGE_ENV, raising=False)
    return image_root


@pytest.fixture(scope="module")
def live_path(tmp_path_factory):
    rng = np.random.default_rng(1)
    ids = pd.Index([f"n{i:04d}" for i in range(100)], name="id")
    frame = pd.DataFrame({"era": "0001", "data_type": "live",
                          "feature_a": rng.integers(0, 5, 100).astype("int8"),
                          "feature_b": rng.integers(0, 5, 100).astype("int8")}, index=ids)
    path = tmp_path_factory.mktemp("live") / "live.parquet"
    frame.to_parquet(path)
    return path


def _write(tmp_path, name: str, fn) -> str:
    """predict.pkl of `fn`, this module's functions stored by value (the child cannot import it)."""
    path = tmp_path / f"{name}.pkl"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        path.write_bytes(cloudpickle.dumps(fn))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    return str(path)


# ----------------------------------------------------------------------------- predicts
def _good(live):
    import pandas as pd

    ranks = live["feature_a"].rank(method="first").to_numpy()
    return pd.DataFrame({"prediction": ranks / (len(ranks) + 1)}, index=live.index)


def _matvec(live):
    import numpy as np
    import pandas as pd

    x = live[["feature_a", "feature_b"]].to_numpy(dtype=float)
    score = np.matvec(x, np.array([1.0, 0.5]))  # numpy >= 2.2 only
    ranks = pd.Series(score + np.arange(len(score)) * 1e-9).rank(method="first").to_numpy()
    return pd.DataFrame({"prediction": ranks / (len(ranks) + 1)}, index=live.index)


def _polars(live):
    import pandas as pd
    import polars as pl

    frame = pl.DataFrame({"a": live["feature_a"].to_numpy()}).with_columns(pl.col("a").rank("ordinal").alias("r"))
    ranks = frame["r"].to_numpy()
    return pd.DataFrame({"prediction": ranks / (len(ranks) + 1)}, index=live.index)


def _pyro_predict():
    import pyro  # the closure holds the module: cloudpickle stores it as subimport('pyro')

    def predict(live):
        pyro.set_rng_seed(0)
        return _good(live)

    return predict


# ----------------------------------------------------------------------------- pins and the scan
def test_pins_are_vendored_with_provenance():
    for image in images.IMAGES:
        pins = images.pins(image)
        assert {"numpy", "pandas", "cloudpickle", "pyarrow", "scipy", "scikit-learn"} <= set(pins), image
    assert images.pins("py3.11")["numpy"] == "2.1.3" and images.pins("py3.11")["polars"] == "1.31.0"
    assert images.pins("py3.10")["numpy"] == "1.26.4"
    assert images.pins("py3.13")["cloudpickle"] == "3.1.2"  # the file's trailing blanks are stripped
    assert images.PROVENANCE["commit"] == "19d1769589f83898a293f398e58c0bb1f0943c61"
    from importlib import resources

    text = resources.files("mlflow_numerai.uploads").joinpath("image_pins", "PROVENANCE.md").read_text()
    assert "numerai/numerai-predict" in text and images.PROVENANCE["commit"] in text


def test_module_to_distribution():
    assert images.dist_of_module("sklearn.linear_model", "py3.11") == "scikit-learn"
    assert images.dist_of_module("polars", "py3.11") == "polars"
    assert images.dist_of_module("torch.nn", "py3.11") == "torch"
    assert images.dist_of_module("pyro", "py3.11") is None
    assert images.dist_of_module("mlflow", "py3.11") is None


def _fake_module(monkeypatch, name: str, **attrs) -> types.ModuleType:
    """A module importable here (for pickling by reference) that need not be installed."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_scan_finds_globals_and_modules_by_reference(tmp_path, monkeypatch):
    cls = type("Normal", (), {"__module__": "fancyprob.distributions"})
    _fake_module(monkeypatch, "fancyprob")
    _fake_module(monkeypatch, "fancyprob.distributions", Normal=cls)
    lib = _fake_module(monkeypatch, "polars")

    def predict(live):
        return lib, cls

    path = tmp_path / "p.pkl"
    path.write_bytes(cloudpickle.dumps(predict, protocol=5))  # STACK_GLOBAL + subimport
    found = images.pickle_modules(path)
    assert {"fancyprob.distributions", "polars"} <= found
    plan = images.plan("py3.11", found)
    assert plan.missing == ["fancyprob"] and "polars" in plan.dists
    # protocol 0: GLOBAL opcodes
    old = tmp_path / "old.pkl"
    old.write_bytes(b"cxgboost.sklearn\nXGBRegressor\np0\n.")
    assert images.pickle_modules(old) == {"xgboost.sklearn"}
    assert images.plan("py3.11", images.pickle_modules(old)).dists == ["xgboost"]
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    assert images.pickle_modules(tmp_path / "junk.pkl") is None


def test_missing_interpreter_says_how_to_get_it():
    with pytest.raises(images.ImageError, match=r"pyenv install 3\.99.*--image none"):
        images.find_interpreter("3.99")


def test_pyenv_interpreters_are_found_even_when_not_selected():
    found = [v for v in ("3.10", "3.12", "3.13") if _has(v)]
    if not found:
        pytest.skip("no Python 3.10/3.12/3.13 on this machine")
    for version in found:
        assert images._version_of(images.find_interpreter(version)) == version


def _has(version: str) -> bool:
    try:
        images.find_interpreter(version)
        return True
    except images.ImageError:
        return False


def test_bad_image_argument(tmp_path, live_path):
    pkl = _write(tmp_path, "good", _good)
    with pytest.raises(ValidationArgumentError, match="--image must be one of"):
        validate(pkl, live=live_path, image="py2.7")
    with pytest.raises(ValidationArgumentError, match="contradicts"):
        validate(pkl, live=live_path, image="py3.11", python="3.12")


# ----------------------------------------------------------------------------- building
def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def broken(self, python, dists, prefix):
        (prefix / "half-installed").write_text("x")
        raise images.ImageError("the installer failed on purpose")

    monkeypatch.setattr(images.ImageEnv, "_install", broken)
    env = images.ImageEnv("py3.11", root=tmp_path)
    with pytest.raises(images.ImageError, match="on purpose"):
        env.ensure()
    assert not env.path.exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_concurrent_builders_build_once(tmp_path, monkeypatch):
    calls = []

    def install(self, python, dists, prefix):
        calls.append(list(dists))
        time.sleep(0.2)  # widen the window in which a second builder would start

    monkeypatch.setattr(images.ImageEnv, "_install", install)
    results = []
    threads = [threading.Thread(target=lambda: results.append(images.ImageEnv("py3.11", root=tmp_path).ensure()))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [list(images.CORE)]
    assert sorted(r.built for r in results) == [False, False, True]
    assert images.ImageEnv("py3.11", root=tmp_path).marker()["provenance"] == images.PROVENANCE


# ----------------------------------------------------------------------------- judging in the image
@pytest.mark.usefixtures("pypi")
def test_default_image_is_the_pickles_python_and_env_is_reused(tmp_path, live_path, use_root):
    pkl = _write(tmp_path, "good", _good)
    started = time.perf_counter()
    first = validate(pkl, live=live_path)  # no image given: the pickle's Python (this one)
    first_seconds = time.perf_counter() - started
    assert (first.status, first.reason) == (SUCCESS, None), first.message + first.log_tail
    assert first.image["name"] == f"py{THIS}"
    assert first.image["pins"]["numpy"] == images.pins(f"py{THIS}")["numpy"]
    assert first.image["pins_source"]["repository"] == "numerai/numerai-predict"
    marker = os.path.join(first.image["env"], images.ENV_MARKER)
    before = os.stat(marker).st_mtime_ns
    started = time.perf_counter()
    second = validate(pkl, live=live_path, image=f"py{THIS}")
    second_seconds = time.perf_counter() - started
    assert second.status == SUCCESS and second.image["env_built"] is False
    assert second.image["env"] == first.image["env"] and os.stat(marker).st_mtime_ns == before
    print(f"\nimage py{THIS}: first validation {first_seconds:.1f} s (env built: {first.image['env_built']}, "
          f"{first.image['build_seconds']} s), second {second_seconds:.1f} s (reused)")


@pytest.mark.usefixtures("pypi")
def test_matvec_fails_in_py311_but_passes_here(tmp_path, live_path, use_root):
    pkl = _write(tmp_path, "matvec", _matvec)
    if not hasattr(np, "matvec"):
        pytest.skip("this environment's numpy has no matvec")
    here = validate(pkl, live=live_path, image="none")
    assert here.status == SUCCESS, here.message
    report = validate(pkl, live=live_path, image="py3.11")
    assert (report.status, report.reason) == (FAILED, "exception"), report.message
    assert "matvec" in report.message + report.log_tail
    assert report.image["pins"]["numpy"] == "2.1.3"


@pytest.mark.usefixtures("pypi")
def test_polars_passes_in_the_image_after_one_install(tmp_path, live_path, use_root):
    pkl = _write(tmp_path, "polars", _polars)
    report = validate(pkl, live=live_path, image="py3.11")
    assert (report.status, report.reason) == (SUCCESS, None), report.message + report.log_tail
    # `import polars` inside predict is invisible to the scan: found by the retry
    assert report.image["retried_for"] == "polars"
    assert report.image["installed"] == ["polars"] and report.image["pins"]["polars"] == "1.31.0"
    again = validate(pkl, live=live_path, image="py3.11")
    assert again.status == SUCCESS and again.image["installed"] == [] and again.image["retried_for"] is None
    try:
        import polars  # noqa: F401
    except ImportError:  # this environment has no polars: the same pickle fails here
        here = validate(pkl, live=live_path, image="none")
        assert (here.status, here.reason) == (FAILED, "import")


def test_pyro_fails_naming_pyro_without_installing(tmp_path, live_path, monkeypatch):
    pytest.importorskip("pyro")
    root = tmp_path / "images"
    monkeypatch.setattr(images, "cache_dir", lambda: root)
    pkl = _write(tmp_path, "pyro", _pyro_predict())
    report = validate(pkl, live=live_path, image="py3.11")
    assert (report.status, report.reason) == (FAILED, "import")
    assert "'pyro'" in report.message and "py3.11" in report.message
    assert report.image["missing"] == ["pyro"]
    assert not root.exists()  # decided from the scan: nothing built, nothing downloaded


def test_cli_names_the_image(tmp_path, live_path, monkeypatch):
    from click.testing import CliRunner

    from mlflow_numerai.cli.validate import validate as validate_cli

    pytest.importorskip("pyro")
    monkeypatch.setattr(images, "cache_dir", lambda: tmp_path / "images")
    pkl = _write(tmp_path, "pyro", _pyro_predict())
    result = CliRunner().invoke(validate_cli, [pkl, "--live", str(live_path), "--image", "py3.12",
                                               "--pickle-python", "3.12", "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 1 and report["reason"] == "import"
    assert report["image"]["name"] == "py3.12" and report["image"]["pins_source"] == images.PROVENANCE
    # the pickle's Python differs from the image's: that is judged first when known
    mismatch = CliRunner().invoke(validate_cli, [pkl, "--live", str(live_path), "--image", "py3.12",
                                                 "--pickle-python", THIS, "--json"])
    if THIS != "3.12":
        assert json.loads(mismatch.output)["reason"] == "python_mismatch"



def test_missing_interpreter_is_an_error_naming_the_fix(tmp_path, live_path, monkeypatch):
    monkeypatch.setattr(images, "cache_dir", lambda: tmp_path / "images")
    real = images.find_interpreter.__wrapped__  # uncached
    monkeypatch.setattr(images, "find_interpreter", lambda python: real("3.99"))
    report = validate(_write(tmp_path, "good", _good), live=live_path, image="py3.11")
    assert (report.status, report.reason) == ("Error", "runtime"), report.message
    assert "pyenv install 3.99" in report.message and report.exit_code == 2
    assert not any((tmp_path / "images").glob("py3.11-*"))  # nothing half-made
