"""Upload states on registered model versions, promotion gates, the audit trail and races."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_numerai import registry
from mlflow_numerai.cli.promote import promote_command
from mlflow_numerai.conventions import UPLOAD_HISTORY_TAG, UPLOAD_REASON_TAG, UPLOAD_STATE_TAG, VALIDATION_RUN_TAG
from mlflow_numerai.registry import PromotionError, RegistryError, RegistryRecorder, promote, upload_state
from mlflow_numerai.registry.states import (
    ERROR,
    FAILED,
    PENDING,
    RUNNING,
    SUCCESS,
    VALIDATING,
    UploadStateMachine,
)


@pytest.fixture(scope="module")
def module_store(tmp_path_factory):
    """One SQLite store for the module (creating one costs seconds); tests use their own names."""
    import mlflow

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_NUMERAI_CACHE", str(root / "cache"))
        mp.chdir(root)
        mlflow.set_tracking_uri(uri)
        yield uri
    if mlflow.active_run():
        mlflow.end_run()


@pytest.fixture()
def client(module_store, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", module_store)
    mlflow.set_tracking_uri(module_store)
    return MlflowClient(module_store)


@pytest.fixture()
def uniq(request):
    """A registered-model name prefix unique to the test."""
    return request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:60]


def _bare_versions(client, name: str, n: int) -> list[str]:
    """`n` versions of a registered model without artifacts (promotion only reads tags)."""
    client.create_registered_model(name)
    return [str(client.create_model_version(name, source=f"file:///nowhere/{i}").version) for i in range(n)]


def _mark(client, name, version, final, reason=None, metrics=None):
    """Record a whole upload cycle on a version (as the validator does), optionally with a
    validation run holding diagnostics metrics."""
    recorder = RegistryRecorder(name, version, client)
    if metrics is not None:
        exp = client.get_experiment_by_name("numerai-uploads") or None
        exp_id = exp.experiment_id if exp else client.create_experiment("numerai-uploads")
        run = client.create_run(exp_id)
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        recorder.link_run(run.info.run_id)
    machine = UploadStateMachine(recorder)
    machine.to(PENDING)
    machine.to(RUNNING)
    if final == SUCCESS:
        machine.to(VALIDATING)
        machine.to(SUCCESS)
    else:
        machine.to(final, reason or "exception")


# ----------------------------------------------------------------------------- promotion
def test_promotion_refuses_without_success(client, uniq):
    (v1,) = _bare_versions(client, uniq, 1)
    with pytest.raises(PromotionError, match="upload_state is None"):
        promote(uniq, v1)
    _mark(client, uniq, v1, FAILED, "oom")
    with pytest.raises(PromotionError, match="upload_state is 'Failed'"):
        promote(uniq, v1)
    assert "champion" not in client.get_registered_model(uniq).aliases


def test_promotion_gates_say_which_and_by_how_much(client, uniq):
    (v1,) = _bare_versions(client, uniq, 1)
    _mark(client, uniq, v1, SUCCESS, metrics={"validation_corr_mean": 0.01, "validation_corr_sharpe": 0.9})
    with pytest.raises(PromotionError) as info:
        promote(uniq, v1, min_corr=0.015, min_sharpe=0.5)
    message = str(info.value)
    assert "min_corr" in message and "short by 0.005" in message
    assert "min_sharpe" not in message  # that gate passed
    result = promote(uniq, v1, min_corr=0.005, min_sharpe=0.5)
    assert [g.name for g in result.gates] == ["upload_state", "min_corr", "min_sharpe"]
    assert all(g.passed for g in result.gates)


def test_gate_with_no_metric_refuses(client, uniq):
    (v1,) = _bare_versions(client, uniq, 1)
    _mark(client, uniq, v1, SUCCESS)
    with pytest.raises(PromotionError, match="no metric found"):
        promote(uniq, v1, min_sharpe=0.1)


def test_promotion_moves_alias_with_audit_trail(client, uniq):
    v1, v2 = _bare_versions(client, uniq, 2)
    _mark(client, uniq, v1, SUCCESS)
    _mark(client, uniq, v2, SUCCESS)
    first = promote(uniq, v1)
    assert first.previous_version is None
    second = promote(uniq, v2, "champion")
    assert second.previous_version == v1
    assert str(client.get_registered_model(uniq).aliases["champion"]) == v2
    tags = client.get_model_version(uniq, v2).tags
    assert tags["numerai.promotion.alias"] == "champion"
    assert tags["numerai.promotion.previous_version"] == v1
    assert json.loads(tags["numerai.promotion.gates"])[0]["name"] == "upload_state"
    assert tags["numerai.promotion.time"] >= client.get_model_version(uniq, v1).tags["numerai.promotion.time"]
    model_tags = client.get_registered_model(uniq).tags
    assert model_tags["numerai.promotion.champion.version"] == v2
    assert model_tags["numerai.promotion.champion.previous_version"] == v1


def test_missing_version_is_a_registry_error(client, uniq):
    _bare_versions(client, uniq, 1)
    with pytest.raises(RegistryError, match="version 7"):
        promote(uniq, "7")


def test_state_flip_between_check_and_move_is_rolled_back(client, monkeypatch, uniq):
    """A validation that fails v2 while its promotion moves the alias: the alias goes back to v1."""
    v1, v2 = _bare_versions(client, uniq, 2)
    _mark(client, uniq, v1, SUCCESS)
    promote(uniq, v1)
    _mark(client, uniq, v2, SUCCESS)
    original = client.set_registered_model_alias

    def flip_then_set(self, name, alias, version):
        if str(version) == v2:
            # the tag write of a concurrent validation lands right before the move (bypassing
            # the recorder's own alias guard, which would run before the alias exists)
            self.set_model_version_tag(name, v2, UPLOAD_STATE_TAG, FAILED)
        return original(name, alias, version)

    from mlflow import MlflowClient

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", flip_then_set)
    with pytest.raises(PromotionError, match="changed to 'Failed' during the promotion"):
        promote(uniq, v2)
    assert str(client.get_registered_model(uniq).aliases["champion"]) == v1


def test_failure_after_promotion_takes_the_alias_back(client, uniq):
    v1, v2 = _bare_versions(client, uniq, 2)
    _mark(client, uniq, v1, SUCCESS)
    _mark(client, uniq, v2, SUCCESS)
    promote(uniq, v1)
    promote(uniq, v2)
    _mark(client, uniq, v2, FAILED, "timeout")  # re-validation of the champion fails
    aliases = client.get_registered_model(uniq).aliases
    assert str(aliases["champion"]) == v1
    assert "timeout" in client.get_registered_model(uniq).tags["numerai.promotion.champion.revoked"]


def test_racing_promotions_never_leave_alias_on_failed_version(client, uniq):
    """Threads promote v1 (good) and v2 while another thread fails v2: whatever the interleaving,
    the alias ends on a version whose latest state is Success."""
    for round_ in range(3):
        _race_round(client, f"{uniq}{round_}")


def _race_round(client, name: str) -> None:
    v1, v2 = _bare_versions(client, name, 2)
    _mark(client, name, v1, SUCCESS)
    _mark(client, name, v2, SUCCESS)
    errors, promoted, refused = [], [], []
    start = threading.Barrier(4)

    def promoter(version):
        start.wait()
        for _ in range(3):
            try:
                promoted.append(promote(name, version).version)
            except PromotionError as exc:
                refused.append((version, str(exc)))
            except Exception as exc:
                errors.append(exc)

    def failer():
        start.wait()
        try:
            _mark(client, name, v2, FAILED, "oom")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=promoter, args=(v,)) for v in (v1, v2, v2)]
    threads.append(threading.Thread(target=failer))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert promoted.count(v1) == 3  # v1 stays Success: none of its promotions may be refused
    model = client.get_registered_model(name)
    holder = model.aliases.get("champion")
    revoked = json.loads(model.tags.get("numerai.promotion.champion.revoked", "{}"))
    # On v1; or gone only because a take-back from failed v2 found no Success holder to return
    # it to (the registry has no compare-and-set: a racing move can make that record stale).
    taken_back = revoked.get("version") == v2 or any(
        v == v2 and "back on no version" in why for v, why in refused)
    assert str(holder) == v1 or (holder is None and taken_back), (holder, revoked, refused)
    assert upload_state(name, v1, client)["state"] == SUCCESS
    assert upload_state(name, v2, client)["state"] == FAILED


def test_alias_row_changed_under_us_is_retried(client, uniq, monkeypatch):
    """A concurrent writer updating or deleting the alias row makes SQLAlchemy raise "0 were
    matched"; the move is retried instead of failing the promotion (seen in the race above)."""
    from mlflow.exceptions import MlflowException

    (v1,) = _bare_versions(client, uniq, 1)
    _mark(client, uniq, v1, SUCCESS)
    real = client.set_registered_model_alias
    calls = []

    def stale_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise MlflowException("UPDATE statement on table 'registered_model_aliases' expected to "
                                  "update 1 row(s); 0 were matched.")
        return real(*args)

    monkeypatch.setattr(client, "set_registered_model_alias", stale_once)
    promote(uniq, v1, client=client)
    assert len(calls) == 2
    assert str(client.get_registered_model(uniq).aliases["champion"]) == v1


def test_promote_cli_exit_codes(client, uniq):
    v1, v2 = _bare_versions(client, uniq, 2)
    _mark(client, uniq, v1, SUCCESS, metrics={"validation_corr_mean": 0.02})
    runner = CliRunner()
    ok = runner.invoke(promote_command, [uniq, "--version", v1, "--min-corr", "0.01", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["promoted"] is True
    refused = runner.invoke(promote_command, [uniq, "--version", v2])
    assert refused.exit_code == 1 and "upload_state" in refused.output
    missing = runner.invoke(promote_command, ["nope", "--version", "1"])
    assert missing.exit_code == 2


# ----------------------------------------------------------------------------- validation states
@pytest.fixture()
def live_path(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"era": "0001", "data_type": "live", "feature_a": rng.integers(0, 5, 60).astype("int8")},
                         index=pd.Index([f"i{i}" for i in range(60)], name="id"))
    path = tmp_path / "live.parquet"
    frame.to_parquet(path)
    return path


def _register(name, predict, live_path):
    import mlflow

    from mlflow_numerai.packaging import log_numerai_model

    with mlflow.start_run():
        info = log_numerai_model(predict, input_example=pd.read_parquet(live_path), registered_model_name=name)
    return info


def _good_fn():
    """A good predict, defined locally so cloudpickle stores it by value."""

    def predict(live):
        r = live["feature_a"].rank(method="first")
        return (r / (len(r) + 1)).to_frame("prediction")

    return predict


def test_validating_a_version_records_states_and_a_linked_run(client, live_path, uniq):
    from mlflow_numerai.uploads.validate import validate

    _register(uniq, _good_fn(), live_path)
    report = validate(f"models:/{uniq}/1", live=live_path)
    assert (report.status, report.reason) == (SUCCESS, None), report.message
    assert (report.model_name, report.model_version) == (uniq, "1")
    tags = client.get_model_version(uniq, "1").tags
    assert tags[UPLOAD_STATE_TAG] == SUCCESS and tags[UPLOAD_REASON_TAG] == ""
    history = json.loads(tags[UPLOAD_HISTORY_TAG])
    assert [h["state"] for h in history] == [PENDING, RUNNING, VALIDATING, SUCCESS]
    assert [h["time"] for h in history] == sorted(h["time"] for h in history)
    run_id = tags[VALIDATION_RUN_TAG]
    assert run_id == report.validation_run_id
    files = {f.path for f in client.list_artifacts(run_id, "numerai_upload")}
    assert {"numerai_upload/report.json", "numerai_upload/upload_history.json",
            "numerai_upload/child_live.log", "numerai_upload/predictions_live.csv"} <= files
    # a second validation, on an alias, appends to the history
    client.set_registered_model_alias(uniq, "candidate", "1")
    other = "3.10" if report.python["runtime"] != "3.10" else "3.12"
    again = validate(f"models:/{uniq}@candidate", live=live_path, python=other)
    assert (again.status, again.reason) == (FAILED, "python_mismatch")
    state = upload_state(uniq, "1", client)
    assert [h["state"] for h in state["history"]] == [PENDING, RUNNING, VALIDATING, SUCCESS, PENDING, FAILED]
    assert state["reason"] == "python_mismatch"


def test_validation_diagnostics_logged_and_gate_uses_them(client, synthetic_dir, uniq):
    from mlflow_numerai.uploads.validate import validate

    feature = sorted(c for c in pd.read_parquet(synthetic_dir / "live.parquet").columns if c.startswith("feature"))[0]

    def predict(live):
        r = live[feature].rank(method="first")
        return (r / (len(r) + 1)).to_frame("prediction")

    _register(uniq, predict, synthetic_dir / "live.parquet")
    report = validate(f"models:/{uniq}/1", live=synthetic_dir / "live.parquet",
                      validation=synthetic_dir / "validation.parquet")
    assert report.status == SUCCESS, report.message
    run = client.get_run(report.validation_run_id)
    assert run.data.metrics["validation_corr_mean"] == pytest.approx(report.diagnostics["corr_mean"])
    per_era = {f.path for f in client.list_artifacts(report.validation_run_id, "numerai_upload/diagnostics")}
    assert {"numerai_upload/diagnostics/per_era_corr.csv", "numerai_upload/diagnostics/per_era_corr.png"} <= per_era
    corr = report.diagnostics["corr_mean"]
    with pytest.raises(PromotionError, match="min_corr"):
        promote(uniq, "1", min_corr=corr + 0.5)
    assert promote(uniq, "1", min_corr=corr - 0.01).gates[1].value == pytest.approx(corr)


def test_validator_crash_records_error_never_a_stuck_state(client, live_path, monkeypatch, uniq):
    from mlflow_numerai.uploads import validate as validate_module

    _register(uniq, _good_fn(), live_path)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(validate_module, "run_pickle", broken)
    report = validate_module.validate(f"models:/{uniq}/1", live=live_path)
    assert (report.status, report.reason) == (ERROR, "validator")
    assert report.exit_code == 2
    state = upload_state(uniq, "1", client)
    assert state["state"] == ERROR and "disk full" in state["message"]
    assert [h["state"] for h in state["history"]] == [PENDING, RUNNING, ERROR]
    assert client.get_run(report.validation_run_id).info.status == "FAILED"


def test_validate_cli_on_a_model_uri(client, live_path, uniq):
    from mlflow_numerai.cli.validate import validate as validate_cli

    _register(uniq, _good_fn(), live_path)
    result = CliRunner().invoke(validate_cli, [f"models:/{uniq}/1", "--live", str(live_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model_version"] == "1" and report["status"] == SUCCESS
    missing = CliRunner().invoke(validate_cli, [f"models:/{uniq}/9", "--live", str(live_path)])
    assert missing.exit_code == 2
    assert upload_state(uniq, "1", client)["state"] == SUCCESS


def test_parse_models_uri():
    assert registry.parse_models_uri("models:/a/3") == ("a", "3", None)
    assert registry.parse_models_uri("models:/a@champ") == ("a", None, "champ")
    assert registry.parse_models_uri("runs:/abc/model") is None


def test_interrupted_validation_is_recorded_as_error(client, live_path, monkeypatch, uniq):
    from mlflow_numerai.uploads import validate as validate_module

    _register(uniq, _good_fn(), live_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(validate_module, "run_pickle", interrupted)
    with pytest.raises(KeyboardInterrupt):
        validate_module.validate(f"models:/{uniq}/1", live=live_path)
    state = upload_state(uniq, "1", client)
    assert (state["state"], state["reason"]) == (ERROR, "interrupted")


def _forecast_fn(columns):
    def predict(frame):
        import numpy as np
        import pandas as pd

        steps = int(frame["steps"].iloc[0])
        data = {"step": np.arange(1, steps + 1)}
        data.update({c: np.linspace(1.0, 2.0, steps) for c in columns})
        return pd.DataFrame(data, index=pd.Index([f"2010Q{i % 4 + 1}" for i in range(steps)], name="period"))

    return predict


@pytest.mark.parametrize("written, state, reason", [
    (["realgdp_forecast", "realgdp_lower", "realgdp_upper"], SUCCESS, None),
    (["realgdp_forecast"], FAILED, "invalid_output:columns"),
])
def test_forecast_profile_reads_the_declared_contract(client, uniq, written, state, reason):
    """A forecast model (VARMAX-style): the profile, contract and input example come from MLmodel."""
    import mlflow

    from mlflow_numerai.packaging import log_numerai_model
    from mlflow_numerai.uploads.validate import validate

    contract = {"columns": ["step", "realgdp_forecast", "realgdp_lower", "realgdp_upper"], "horizon": 6,
                "max_horizon": 12}
    with mlflow.start_run():
        log_numerai_model(_forecast_fn(written), input_example=pd.DataFrame({"steps": [6]}), profile="forecast",
                          output_contract=contract, registered_model_name=uniq)
    report = validate(f"models:/{uniq}/1")
    assert report.profile == "forecast"
    assert (report.status, report.reason) == (state, reason), report.message
    assert upload_state(uniq, "1", client)["state"] == state


def test_interleaved_validations_keep_each_others_history(client, uniq):
    (v1,) = _bare_versions(client, uniq, 1)
    a = UploadStateMachine(RegistryRecorder(uniq, v1, client))
    b = UploadStateMachine(RegistryRecorder(uniq, v1, client))
    a.to(PENDING)
    b.to(PENDING)
    a.to(RUNNING)
    b.to(RUNNING)
    b.to(FAILED, "timeout")
    a.to(VALIDATING)
    a.to(SUCCESS)
    history = upload_state(uniq, v1, client)["history"]
    assert [h["state"] for h in history] == [PENDING, PENDING, RUNNING, RUNNING, FAILED, VALIDATING, SUCCESS]
    assert upload_state(uniq, v1, client)["state"] == SUCCESS


@pytest.mark.parametrize("message", [
    "(sqlite3.IntegrityError) UNIQUE constraint failed: registered_model_tags.key",
    # seen in CI: two racing promotions inserting the same new record tag on the team server
    '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "registered_model_tag_pk"',
])
def test_a_concurrent_insert_of_the_same_tag_is_retried(message):
    from mlflow.exceptions import MlflowException

    from mlflow_numerai.registry.store import retrying

    calls = []

    def write(value):
        calls.append(value)
        if len(calls) == 1:
            raise MlflowException(f"BAD_REQUEST: {message}")
        return value

    assert retrying(write, "x") == "x" and len(calls) == 2
    with pytest.raises(MlflowException, match="no such model"):
        retrying(lambda: (_ for _ in ()).throw(MlflowException("no such model")))


def test_racers_that_read_the_same_champion_leave_a_true_history(client, uniq, monkeypatch):
    """Seen in CI against the team server: A and B both read "no @champion", A moved it to 1, then
    B moved it to 2. B's record said it displaced nothing, but it displaced A's version 1."""
    v0, v1, v2 = _bare_versions(client, uniq, 3)
    for v in (v0, v1, v2):
        _mark(client, uniq, v, SUCCESS)
    promote(uniq, v0, client=client)
    real_set = client.set_registered_model_alias
    raced = []

    def set_alias(name, alias, version):
        if str(version) == v2 and not raced:  # B has read @champion (v0); A runs whole before B moves it
            raced.append(True)
            promote(uniq, v1, client=client)
        return real_set(name, alias, version)

    monkeypatch.setattr(client, "set_registered_model_alias", set_alias)
    result = promote(uniq, v2, client=client)
    assert raced and result.previous_version == v0  # what B read
    model = client.get_registered_model(uniq)
    assert str(model.aliases["champion"]) == v2
    assert model.tags["numerai.promotion.champion.version"] == v2
    assert model.tags["numerai.promotion.champion.previous_version"] == v1  # what B displaced
    assert client.get_model_version(uniq, v2).tags["numerai.promotion.previous_version"] == v1
    assert client.get_model_version(uniq, v1).tags["numerai.promotion.previous_version"] == v0


def test_an_old_promotion_with_the_same_predecessor_is_not_a_racer(client, uniq):
    v0, v1, v2 = _bare_versions(client, uniq, 3)
    for v in (v0, v1, v2):
        _mark(client, uniq, v, SUCCESS)
    promote(uniq, v0, client=client)
    promote(uniq, v1, client=client)  # 1 displaced 0 ...
    promote(uniq, v0, client=client)  # ... 0 came back ...
    promote(uniq, v2, client=client)  # ... and 2 displaced 0: 1's record (previous 0) is older than 0's return
    model = client.get_registered_model(uniq)
    assert model.tags["numerai.promotion.champion.previous_version"] == v0


def test_a_promotion_overtaken_mid_audit_leaves_a_true_record(client, uniq, monkeypatch):
    """Seen against the team server under load: B moves @champion to 2, A moves it to 1 and writes
    its record, then B writes its record late: the alias said 1 and the record 2."""
    from mlflow_numerai.registry import promotion

    v1, v2 = _bare_versions(client, uniq, 2)
    _mark(client, uniq, v1, SUCCESS)
    _mark(client, uniq, v2, SUCCESS)
    real_audit = promotion._audit
    overtaken = []

    def audit(c, result):
        if result.version == v2 and not overtaken:
            overtaken.append(True)
            promote(uniq, v1, client=client)  # A: the whole promotion between B's move and B's record
        real_audit(c, result)

    monkeypatch.setattr(promotion, "_audit", audit)
    promote(uniq, v2, client=client)
    assert overtaken
    model = client.get_registered_model(uniq)
    assert str(model.aliases["champion"]) == v1
    assert model.tags["numerai.promotion.champion.version"] == v1
    assert model.tags["numerai.promotion.champion.time"] == client.get_model_version(uniq, v1).tags[
        "numerai.promotion.time"]
