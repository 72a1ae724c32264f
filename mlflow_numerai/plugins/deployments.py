"""The `numerai` MLflow deployments target: Numerai's model-upload flow on the local sandbox.

    mlflow deployments create -t numerai --name my_model -m models:/my_model/1 [-C upload=true]
    mlflow deployments get    -t numerai --name my_model
    mlflow deployments list   -t numerai
    mlflow deployments predict -t numerai --name my_model --input-path live.json

`create`/`update` run the upload flow (sandboxed validation, upload states recorded on the model
version) and return the resulting state. With `-C upload=true` and `NUMERAI_PUBLIC_ID` /
`NUMERAI_SECRET_KEY` in the environment, a version that reached Success is also uploaded to
Numerai with numerapi (`model_upload`). A deployment is a registered-model tag
`numerai.deployment.<name>` holding {model_uri, model_name, model_version, created, updated,
upload}; its state is read live from the version's upload-state tags.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException

from mlflow_numerai.conventions import DEPLOYMENT_TAG_PREFIX, UPLOAD_ID_TAG
from mlflow_numerai.packaging import download_predict_pkl
from mlflow_numerai.registry import RegistryError, resolve_model_version, upload_state
from mlflow_numerai.registry.states import SUCCESS, utc_now
from mlflow_numerai.sandbox.runner import SandboxLimits, parse_memory, run_pickle
from mlflow_numerai.tracking import ensure_tracking_uri
from mlflow_numerai.uploads.validate import ValidationArgumentError, validate

CONFIG_KEYS = {
    "upload": "true|false (default false): also upload predict.pkl to Numerai with numerapi when the state is Success",
    "numerai_model": "the model's name on Numerai (default: the deployment name)",
    "data_version": "Numerai data version name or ID for the upload, e.g. v5.0",
    "docker_image": "Numerai runtime image name or ID, e.g. 'Python 3.11' (default: this interpreter's)",
    "live": "live features parquet (default: the default synthetic live.parquet)",
    "benchmarks": "live benchmark models parquet",
    "validation": "validation parquet: also compute per-era diagnostics",
    "cpus": "CPUs (default 1)",
    "memory": "memory cap of the process tree (default 4GiB)",
    "timeout": "wall-clock limit in seconds (default 600)",
    "python": "Python of Numerai's runtime (default: this interpreter's)",
}


def target_help() -> str:
    """What `mlflow deployments help -t numerai` prints."""
    keys = "\n".join(f"  -C {k}=...  {v}" for k, v in CONFIG_KEYS.items())
    return (
        "Target 'numerai': Numerai model uploads, validated locally in mlflow-numerai's sandbox "
        "(1 CPU, 4 GiB for the process tree, 600 s, no network, scrubbed environment).\n"
        "create/update run the upload flow on a model (models:/NAME/VERSION, models:/NAME@ALIAS, "
        "runs:/... which is registered under the deployment name) and return its upload state "
        "(Pending -> Running -> Validating -> Success, or Failed/Error with a reason). get/list "
        "show states, delete forgets a deployment, predict runs the sandbox on the inputs.\n"
        f"Config keys:\n{keys}\n"
        "Uploading needs NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY in the environment."
    )


def run_local(target, name, model_uri, flavor=None, config=None):
    """Run the upload flow locally on `model_uri` without recording a deployment; print the report."""
    ensure_tracking_uri()
    options = _Options(config or {})
    report = validate(model_uri, **options.validate_kwargs(), log_run=False)
    print(json.dumps({k: v for k, v in report.to_dict().items() if k != "log_tail"}, indent=2, default=str))
    return report.to_dict()


def make_numerapi_client(public_id: str, secret_key: str):
    """A numerapi client (tests replace this factory with a fake; nothing here is network-free)."""
    import numerapi

    return numerapi.NumerAPI(public_id=public_id, secret_key=secret_key)


def _bool(value, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise MlflowException(f"config {key}={value!r} must be true or false", error_code="INVALID_PARAMETER_VALUE")


class _Options:
    """The `-C key=value` config, checked: unknown keys and bad values name themselves."""

    def __init__(self, config: dict):
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if unknown:
            raise MlflowException(f"unknown config key(s) {unknown}; known: {sorted(CONFIG_KEYS)}",
                                  error_code="INVALID_PARAMETER_VALUE")
        self.config = dict(config)
        self.upload = _bool(config.get("upload", False), "upload")

    def limits(self):
        try:
            return SandboxLimits(
                cpus=int(self.config.get("cpus", 1)),
                memory_bytes=parse_memory(self.config.get("memory", "4GiB")),
                timeout_seconds=float(self.config.get("timeout", 600)),
            )
        except ValueError as exc:
            raise MlflowException(f"bad sandbox config: {exc}", error_code="INVALID_PARAMETER_VALUE") from exc

    def validate_kwargs(self) -> dict:
        return {
            "live": self.config.get("live"),
            "benchmarks": self.config.get("benchmarks"),
            "validation": self.config.get("validation"),
            "python": self.config.get("python"),
            "limits": self.limits(),
        }


class NumeraiDeploymentClient(BaseDeploymentClient):
    """Deployments = Numerai model-upload slots, validated in the local sandbox."""

    def __init__(self, target_uri: str = "numerai"):
        super().__init__(target_uri)
        ensure_tracking_uri()
        self.client = MlflowClient()

    # ------------------------------------------------------------------ records
    def _find(self, name: str):
        """(registered model name, record) of deployment `name`, or (None, None)."""
        key = DEPLOYMENT_TAG_PREFIX + name
        for model in self._all_models():
            if key in model.tags:
                return model.name, json.loads(model.tags[key])
        return None, None

    def _all_models(self):
        token = None
        while True:
            page = self.client.search_registered_models(max_results=200, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _with_state(self, record: dict) -> dict:
        try:
            state = upload_state(record["model_name"], record["model_version"], self.client)
        except MlflowException:
            state = {"state": None, "reason": "model version deleted", "history": [], "validation_run_id": None}
        return {**record, "flavor": "numerai", "state": state["state"], "reason": state["reason"],
                "validation_run_id": state["validation_run_id"], "history": state["history"]}

    def _save(self, record: dict) -> None:
        self.client.set_registered_model_tag(record["model_name"], DEPLOYMENT_TAG_PREFIX + record["name"],
                                             json.dumps(record))

    def _registered(self, name: str, model_uri: str) -> tuple[str, str]:
        """(model name, version) behind `model_uri`; other URIs are registered under `name`."""
        try:
            resolved = resolve_model_version(model_uri, self.client)
        except RegistryError as exc:
            raise MlflowException(str(exc), error_code="RESOURCE_DOES_NOT_EXIST") from exc
        if resolved is not None:
            return resolved
        version = mlflow.register_model(model_uri, name)
        return version.name, str(version.version)

    # ------------------------------------------------------------------ the flow
    def _deploy(self, name: str, model_uri: str, config: dict | None, previous: dict | None) -> dict:
        options = _Options(config or {})
        # Everything an upload needs is checked before any work: keys, model name, options.
        upload = _preflight(options, name) if options.upload else None
        model_name, version = self._registered(name, model_uri)
        try:
            report = validate(f"models:/{model_name}/{version}", **options.validate_kwargs())
        except ValidationArgumentError as exc:
            raise MlflowException(str(exc), error_code="INVALID_PARAMETER_VALUE") from exc
        now = utc_now()
        record = {"name": name, "model_uri": model_uri, "model_name": model_name, "model_version": version,
                  "created": (previous or {}).get("created", now), "updated": now, "upload": None}
        if previous and previous.get("model_name") != model_name:
            self.client.delete_registered_model_tag(previous["model_name"], DEPLOYMENT_TAG_PREFIX + name)
        if upload is not None and report.status == SUCCESS:
            record["upload"] = self._upload(record, upload)
        elif upload is not None:
            record["upload"] = {"skipped": f"state is {report.status} ({report.reason}); nothing uploaded"}
        self._save(record)
        return self._with_state(record)

    def _upload(self, record: dict, upload: dict) -> dict:
        api = upload.pop("api")
        send = getattr(api, "model_upload", None) or api.upload_model
        with tempfile.TemporaryDirectory(prefix="numerai-upload-") as tmp:
            pkl = download_predict_pkl(f"models:/{record['model_name']}/{record['model_version']}", tmp)
            upload_id = send(str(pkl), model_id=upload["model_id"], data_version=upload["data_version"],
                             docker_image=upload["docker_image"])
        self.client.set_model_version_tag(record["model_name"], record["model_version"], UPLOAD_ID_TAG,
                                          str(upload_id))
        return {"upload_id": str(upload_id), **upload}

    # ------------------------------------------------------------------ the API
    def create_deployment(self, name, model_uri, flavor=None, config=None, endpoint=None):
        if flavor not in (None, "numerai", "python_function"):
            raise MlflowException(f"flavor {flavor!r} is not supported; the numerai target runs predict.pkl",
                                  error_code="INVALID_PARAMETER_VALUE")
        if self._find(name)[1] is not None:
            raise MlflowException(f"deployment {name!r} already exists; use update",
                                  error_code="RESOURCE_ALREADY_EXISTS")
        return self._deploy(name, model_uri, config, None)

    def update_deployment(self, name, model_uri=None, flavor=None, config=None, endpoint=None):
        _, record = self._find(name)
        if record is None:
            raise MlflowException(f"no deployment named {name!r}", error_code="RESOURCE_DOES_NOT_EXIST")
        return self._deploy(name, model_uri or record["model_uri"], config, record)

    def delete_deployment(self, name, config=None, endpoint=None):
        model_name, record = self._find(name)
        if record is None:
            raise MlflowException(f"no deployment named {name!r}", error_code="RESOURCE_DOES_NOT_EXIST")
        self.client.delete_registered_model_tag(model_name, DEPLOYMENT_TAG_PREFIX + name)

    def list_deployments(self, endpoint=None):
        found = []
        for model in self._all_models():
            for key, value in model.tags.items():
                if key.startswith(DEPLOYMENT_TAG_PREFIX):
                    found.append(self._with_state(json.loads(value)))
        return sorted(found, key=lambda r: r["name"])

    def get_deployment(self, name, endpoint=None):
        _, record = self._find(name)
        if record is None:
            raise MlflowException(f"no deployment named {name!r}", error_code="RESOURCE_DOES_NOT_EXIST")
        return self._with_state(record)

    def predict(self, deployment_name=None, inputs=None, endpoint=None):
        """Run the deployment's predict.pkl on `inputs` (a DataFrame of live features) in the sandbox."""
        record = self.get_deployment(deployment_name)
        if not isinstance(inputs, pd.DataFrame):
            try:
                inputs = pd.DataFrame(inputs)
            except Exception as exc:
                raise MlflowException(f"inputs must be a table of live features: {exc}",
                                      error_code="INVALID_PARAMETER_VALUE") from exc
        if "id" in inputs.columns:
            inputs = inputs.set_index("id")
        inputs.index = inputs.index.astype(str)
        inputs.index.name = "id"
        with tempfile.TemporaryDirectory(prefix="numerai-predict-") as tmp:
            pkl = download_predict_pkl(f"models:/{record['model_name']}/{record['model_version']}", tmp)
            outcome = run_pickle(pkl, inputs, output_dir=Path(tmp) / "out")
            if outcome.status != "ok":
                raise MlflowException(f"the model failed in the sandbox ({outcome.reason}): {outcome.message}")
            frame = pd.read_csv(outcome.predictions_csv, dtype={0: str})
        return PredictionsResponse({"predictions": frame.to_dict(orient="records")})


def _preflight(options: _Options, deployment: str) -> dict:
    """Check an upload can happen (keys, the Numerai model, data version, image); its parameters."""
    api = make_numerapi_client(*_numerai_keys())
    numerai_model = options.config.get("numerai_model", deployment)
    models = api.get_models()
    if numerai_model not in models:
        raise MlflowException(f"Numerai account has no model named {numerai_model!r}; it has {sorted(models)}",
                              error_code="RESOURCE_DOES_NOT_EXIST")
    data_version = options.config.get("data_version")
    docker_image = options.config.get("docker_image") or f"Python {sys.version_info.major}.{sys.version_info.minor}"
    for what, value, lister in (("data_version", data_version, "model_upload_data_versions"),
                                ("docker_image", docker_image, "model_upload_docker_images")):
        if value is None or not hasattr(api, lister):
            continue
        available = getattr(api, lister)()
        if value not in available and value not in available.values():
            raise MlflowException(f"{what} {value!r} is not offered by Numerai; choose one of {sorted(available)}",
                                  error_code="INVALID_PARAMETER_VALUE")
    return {"api": api, "numerai_model": numerai_model, "model_id": models[numerai_model],
            "data_version": data_version, "docker_image": docker_image}


def _numerai_keys() -> tuple[str, str]:
    public, secret = os.environ.get("NUMERAI_PUBLIC_ID"), os.environ.get("NUMERAI_SECRET_KEY")
    if not public or not secret:
        raise MlflowException("upload=true needs NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY in the environment",
                              error_code="INVALID_PARAMETER_VALUE")
    return public, secret
