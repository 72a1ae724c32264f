"""The `numerai` deployments target: create/get/list/update/delete/predict, uploads through a
fake numerapi client (never the network), `run_local` and `target_help`."""

from __future__ import annotations

import json
from typing import ClassVar

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.exceptions import MlflowException

from mlflow_numerai.plugins import deployments as plugin
from mlflow_numerai.registry.states import FAILED, SUCCESS


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One tracking store for the module, with `good` (version 1) and `bad` (version 1) registered."""
    import mlflow

    from mlflow_numerai.packaging import log_numerai_model

    root = tmp_path_factory.mktemp("deploy")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    rng = np.random.default_rng(2)
    live = pd.DataFrame({"era": "0001", "data_type": "live", "feature_a": rng.integers(0, 5, 80).astype("int8")},
                        index=pd.Index([f"x{i}" for i in range(80)], name="id"))
    live_path = root / "live.parquet"
    live.to_parquet(live_path)

    def good_fn():
        def predict(live):
            r = live["feature_a"].rank(method="first")
            return (r / (len(r) + 1)).to_frame("prediction")

        return predict

    def slow_fn():
        base = good_fn()

        def predict(live):
            if len(live) > 50:  # fine on the small example, too slow on the live frame
                import time

                time.sleep(60)
            return base(live)

        return predict

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run():
            log_numerai_model(good_fn(), input_example=live, registered_model_name="good")
            log_numerai_model(slow_fn(), input_example=live.head(10), registered_model_name="slow")
        yield {"uri": uri, "live": str(live_path), "live_frame": live}


@pytest.fixture()
def client(store, monkeypatch):
    import mlflow
    from mlflow.deployments import get_deploy_client

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    mlflow.set_tracking_uri(store["uri"])
    return get_deploy_client("numerai")


class FakeNumerAPI:
    """Records calls; answers like numerapi 3 (name -> id mappings, an upload id)."""

    calls: ClassVar[list] = []

    def __init__(self, public_id, secret_key):
        self.keys = (public_id, secret_key)

    def get_models(self):
        return {"my_numerai_model": "model-uuid-1"}

    def model_upload_data_versions(self):
        return {"v5.0": "dv-uuid"}

    def model_upload_docker_images(self):
        return {"Python 3.11": "img-311", "Python 3.12": "img-312", "Python 3.10": "img-310"}

    def model_upload(self, file_path, tournament=None, model_id=None, data_version=None, docker_image=None):
        with open(file_path, "rb") as fh:
            fn = cloudpickle.loads(fh.read())
        FakeNumerAPI.calls.append({"file": file_path, "model_id": model_id, "data_version": data_version,
                                   "docker_image": docker_image, "keys": self.keys, "callable": callable(fn)})
        return "upload-123"


@pytest.fixture()
def fake_numerapi(monkeypatch):
    FakeNumerAPI.calls = []
    monkeypatch.setattr(plugin, "make_numerapi_client", FakeNumerAPI)
    monkeypatch.setenv("NUMERAI_PUBLIC_ID", "pub")
    monkeypatch.setenv("NUMERAI_SECRET_KEY", "sec")
    return FakeNumerAPI


def test_the_plugin_is_found_through_the_entry_point(client):
    assert isinstance(client, plugin.NumeraiDeploymentClient)
    assert "upload" in plugin.target_help() and "NUMERAI_SECRET_KEY" in plugin.target_help()


def test_create_get_list_predict_update_delete(client, store):
    created = client.create_deployment("slot", "models:/good/1", config={"live": store["live"]})
    assert (created["state"], created["reason"]) == (SUCCESS, None)
    assert [h["state"] for h in created["history"]][-1] == SUCCESS
    assert client.get_deployment("slot")["model_version"] == "1"
    assert [d["name"] for d in client.list_deployments()] == ["slot"]
    with pytest.raises(MlflowException, match="already exists"):
        client.create_deployment("slot", "models:/good/1")

    response = client.predict("slot", store["live_frame"].reset_index())
    preds = pd.DataFrame(response["predictions"])
    assert list(preds.columns) == ["id", "prediction"]
    # `good` is the rank of feature_a (ties in row order) over n + 1: the stable sort's positions
    live = store["live_frame"]
    positions = np.empty(len(live))
    positions[np.argsort(live["feature_a"].to_numpy(), kind="stable")] = np.arange(1, len(live) + 1)
    expected = pd.Series(positions / (len(live) + 1), index=live.index)
    assert sorted(preds["id"]) == sorted(live.index)
    np.testing.assert_allclose(preds.set_index("id")["prediction"].loc[live.index], expected, rtol=0, atol=1e-12)

    updated = client.update_deployment("slot", "models:/slow/1", config={"live": store["live"], "timeout": "3"})
    assert (updated["state"], updated["reason"]) == (FAILED, "timeout")
    assert client.get_deployment("slot")["model_name"] == "slow"
    assert "numerai.deployment.slot" not in client.client.get_registered_model("good").tags

    client.delete_deployment("slot")
    assert client.list_deployments() == []
    with pytest.raises(MlflowException, match="no deployment"):
        client.get_deployment("slot")


def test_upload_with_fake_numerapi(client, store, fake_numerapi):
    record = client.create_deployment(
        "up", "models:/good/1",
        config={"live": store["live"], "upload": "true", "numerai_model": "my_numerai_model",
                "data_version": "v5.0", "docker_image": "Python 3.11"},
    )
    assert record["state"] == SUCCESS
    assert record["upload"]["upload_id"] == "upload-123"
    (call,) = fake_numerapi.calls
    assert call["file"].endswith("predict.pkl") and call["callable"]
    assert (call["model_id"], call["data_version"], call["docker_image"], call["keys"]) == (
        "model-uuid-1", "v5.0", "Python 3.11", ("pub", "sec"))
    assert client.client.get_model_version("good", "1").tags["numerai.upload.id"] == "upload-123"
    client.delete_deployment("up")


def test_failed_model_is_never_uploaded(client, store, fake_numerapi):
    record = client.create_deployment("bad", "models:/slow/1",
                                      config={"live": store["live"], "upload": "true", "timeout": "3",
                                              "numerai_model": "my_numerai_model"})
    assert record["state"] == FAILED
    assert fake_numerapi.calls == []
    assert "nothing uploaded" in record["upload"]["skipped"]
    client.delete_deployment("bad")


def test_upload_config_errors_name_the_problem(client, store, fake_numerapi, monkeypatch):
    from mlflow_numerai.registry import upload_history

    before = upload_history("good", "1", client.client)
    with pytest.raises(MlflowException, match="no model named 'nope'"):
        client.create_deployment("e1", "models:/good/1",
                                 config={"live": store["live"], "upload": "true", "numerai_model": "nope"})
    with pytest.raises(MlflowException, match="docker_image 'Python 2.7' is not offered"):
        client.create_deployment("e1b", "models:/good/1",
                                 config={"upload": "true", "numerai_model": "my_numerai_model",
                                         "docker_image": "Python 2.7"})
    with pytest.raises(MlflowException, match="unknown config key"):
        client.create_deployment("e2", "models:/good/1", config={"uplaod": "true"})
    with pytest.raises(MlflowException, match="must be true or false"):
        client.create_deployment("e3", "models:/good/1", config={"upload": "maybe"})
    monkeypatch.delenv("NUMERAI_SECRET_KEY")
    with pytest.raises(MlflowException, match="NUMERAI_SECRET_KEY"):
        client.create_deployment("e4", "models:/good/1", config={"upload": "true"})
    with pytest.raises(MlflowException, match="does not resolve"):
        client.create_deployment("e5", "models:/good/99")
    assert fake_numerapi.calls == []
    assert [d["name"] for d in client.list_deployments()] == []
    assert upload_history("good", "1", client.client) == before  # refused before any validation


def test_mlflow_deployments_cli(client, store):
    from mlflow.deployments.cli import commands

    runner = CliRunner()
    created = runner.invoke(commands, ["create", "-t", "numerai", "--name", "clislot", "-m", "models:/good/1",
                                       "-C", f"live={store['live']}"])
    assert created.exit_code == 0, created.output
    got = runner.invoke(commands, ["get", "-t", "numerai", "--name", "clislot"])
    assert got.exit_code == 0 and "Success" in got.output
    listed = runner.invoke(commands, ["list", "-t", "numerai"])
    assert "clislot" in listed.output
    runner.invoke(commands, ["delete", "-t", "numerai", "--name", "clislot"])
    assert client.list_deployments() == []


def test_run_local_prints_the_report(store, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    report = plugin.run_local("numerai", "local", "models:/good/1", config={"live": store["live"]})
    assert report["status"] == SUCCESS
    assert json.loads(capsys.readouterr().out)["status"] == SUCCESS
