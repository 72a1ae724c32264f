"""`mlflow-numerai study`: search spaces, bad input, the study machinery on a real baseline."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_numerai.cli import main
from mlflow_numerai.studies import optuna as study_module


def invoke(*args: str):
    return CliRunner().invoke(main, ["study", *args])


def test_unknown_family_lists_the_choices():
    result = invoke("ridge")
    assert result.exit_code == 2
    assert "baseline" in result.output and "keras" in result.output


def test_unknown_search_space_key_lists_the_keys(tmp_path):
    result = invoke("keras", "--space", "width=1:3", "--storage", f"sqlite:///{tmp_path}/o.db")
    assert result.exit_code == 2
    assert "unknown search-space key 'width'" in result.output
    for key in ("dropout", "epochs", "hidden", "learning_rate", "noise", "weight_decay"):
        assert key in result.output


@pytest.mark.parametrize("family", sorted(study_module.FAMILIES))
def test_every_search_space_key_reaches_the_family_command(family):
    """A trial's parameters become options its training command parses, each to the value
    sampled (a key the options leave out would be searched but never trained with)."""
    import importlib

    spec = study_module.FAMILIES[family]
    module, _, attr = spec.command.partition(":")
    command = getattr(importlib.import_module(module), attr)
    point = {key: p.choices[-1] if p.kind == "categorical" else (p.low + p.high) / 2 if p.kind == "float"
             else int(p.high) for key, p in spec.space.items()}
    args = spec.options(point)
    ctx = command.make_context(family, list(args))
    given = {o.name for o in command.params if o.opts and set(o.opts) & set(args)}
    assert len(given) == len(point), f"{family}: {sorted(point)} -> options {sorted(given)}"
    for key, value in point.items():
        parsed = ctx.params[key]
        if isinstance(value, float):
            assert float(parsed) == pytest.approx(value), key
        elif key != "hidden":  # hidden sizes are parsed into the family's own form
            assert str(parsed) == str(value), key


def test_space_overrides_parse():
    space = study_module.parse_space("keras", ("dropout=0.1:0.2", "hidden=64|32,16", "learning_rate=1e-4:1e-2:log"))
    assert (space["dropout"].low, space["dropout"].high, space["dropout"].log) == (0.1, 0.2, False)
    assert space["hidden"].choices == ("64", "32,16")
    assert space["learning_rate"].log
    with pytest.raises(Exception, match="LOW <= HIGH"):
        study_module.parse_space("baseline", ("alpha=2:1",))


def test_unreachable_tracking_server_is_one_line(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = invoke("baseline", "--tracking-uri", f"http://127.0.0.1:{port}")
    assert result.exit_code == 1
    assert f"tracking server http://127.0.0.1:{port} is unreachable" in result.output
    assert "Traceback" not in result.output


def test_unreachable_storage_is_one_line_without_the_password(tmp_path, tracking_uri):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://bob:hunter2@127.0.0.1:{port}/studies"
    result = invoke("baseline", "--storage", url)
    assert result.exit_code == 1
    assert f"study storage postgresql+psycopg://bob:***@127.0.0.1:{port}/studies is unreachable" in result.output
    assert "hunter2" not in result.output and "Traceback" not in result.output


def test_default_storage_is_beside_the_sqlite_tracking_store(tmp_path):
    assert study_module.default_storage(f"sqlite:///{tmp_path}/mlflow.db") == f"sqlite:///{tmp_path}/optuna.db"


def test_surplus_trials_beyond_n_are_dropped():
    """Two workers asking at once for the last slot: the higher-numbered trial is surplus."""
    study = optuna.create_study()
    a, b = study.ask(), study.ask()
    assert not study_module._is_surplus(study, a, 1)
    assert study_module._is_surplus(study, b, 1)
    assert not study_module._is_surplus(study, b, 2)


def test_study_trials_table_for_the_compare_page():
    from mlflow_numerai.dashboard import study_trials

    runs = pd.DataFrame({
        "run_id": ["p", "t0", "t1", "x"],
        "tags.numerai.study": ["s", "s", "s", None],
        "tags.numerai.study_trial": [None, "0", "1", None],
        "params.trial.alpha": [None, "0.1", "10.0", None],
        "metrics.numerai_corr_mean": [None, 0.02, 0.01, 0.5],
    })
    table = study_trials(runs)
    assert list(table["run_id"]) == ["t0", "t1"]
    assert list(table["alpha"]) == [0.1, 10.0]
    assert list(table["objective"]) == [0.02, 0.01]
    assert study_trials(runs.drop(columns=["tags.numerai.study_trial"])).empty


@pytest.mark.e2e
def test_a_baseline_study_runs_nested_trials_and_registers_the_best(tmp_path, tracking_uri, synthetic_dir):
    from mlflow import MlflowClient

    storage = f"sqlite:///{tmp_path}/optuna.db"
    result = invoke("baseline", "--trials", "2", "--storage", storage, "--study-name", "s1", "--seed", "0",
                    "--data-dir", str(synthetic_dir), "--registered-model-name", "study-best")
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="s1", storage=storage)
    assert len(study.trials) == 2
    client = MlflowClient()
    parent = study.user_attrs["mlflow_run_id"]
    children = client.search_runs(["0"], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 2
    for run in children:
        assert run.data.tags["numerai.family"] == "baseline"
        assert float(run.data.params["trial.alpha"]) == float(run.data.params["alpha"])
        assert "numerai_corr_mean" in run.data.metrics
    (version,) = client.search_model_versions("name = 'study-best'")
    assert version.run_id == study.best_trial.user_attrs["mlflow_run_id"]
    best = max(children, key=lambda r: r.data.metrics["numerai_corr_mean"])
    assert version.run_id == best.info.run_id
    names = {a.path for a in client.list_artifacts(parent, "study")}
    assert {"study/trials.csv", "study/params_vs_objective.png"} <= names



@pytest.mark.e2e
def test_a_bnn_study_reproduces_train_bnn_study_for_the_same_grid_and_seed(tmp_path, tracking_uri, synthetic_dir):
    """`study bnn` replaced the loop of `train bnn-study`: on the same grid (2 priors x 1
    architecture), options and seed, each model's metrics, the ensemble-vs-members table and the
    JS matrix come out the same."""
    from mlflow import MlflowClient

    training = ["--data-dir", str(synthetic_dir), "--epochs", "1", "--n-samples", "20", "--seed", "3"]
    old = CliRunner().invoke(main, ["train", "bnn-study", "--priors", "normal,laplace", "--architectures", "8",
                                    "--no-baseline", *training])
    assert old.exit_code == 0, old.output
    storage = f"sqlite:///{tmp_path}/optuna.db"
    new = invoke("bnn", "--trials", "2", "--storage", storage, "--study-name", "grid", "--seed", "0",
                 "--space", "prior=normal|laplace", "--space", "hidden=8", "--registered-model-name", "none",
                 "--data-dir", str(synthetic_dir), "--", *training[2:], "--k-model-samples", "5")
    assert new.exit_code == 0, new.output

    client = MlflowClient()
    study_run = optuna.load_study(study_name="grid", storage=storage).user_attrs["mlflow_run_id"]
    (old_run,) = [r for r in client.search_runs(["0"], filter_string="tags.`numerai.family` = 'bnn_study'")
                  if "mlflow.parentRunId" not in r.data.tags]

    def table(run_id: str) -> pd.DataFrame:
        path = client.download_artifacts(run_id, "bnn/study_summary.csv", str(tmp_path / run_id))
        return pd.read_csv(path, index_col=0).sort_index()

    def js(run_id: str) -> pd.DataFrame:
        path = client.download_artifacts(run_id, "bnn/js_divergence.csv", str(tmp_path / f"{run_id}-js"))
        return pd.read_csv(path, index_col=0).sort_index().sort_index(axis=1)

    old_table, new_table = table(old_run.info.run_id), table(study_run)
    assert list(new_table.index) == ["laplace/8", "normal/8"] == list(old_table.index)
    shared = ["ensemble_corr_mean", "ensemble_sharpe", "member_corr_mean_mean", "member_corr_mean_std",
              "ensemble_minus_member_corr", "frac_members_below_ensemble", "burn_auc", "uncertainty_mean"]
    assert new_table[shared].notna().all().all()
    pd.testing.assert_frame_equal(new_table[shared], old_table[shared], rtol=1e-6)
    pd.testing.assert_frame_equal(js(study_run), js(old_run.info.run_id), rtol=1e-6)
    assert old_table["ensemble_corr_mean"].idxmax() == client.get_run(study_run).data.tags["bnn.best_model"]
