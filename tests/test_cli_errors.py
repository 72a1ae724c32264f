"""One error convention for every command: a bad input ends with one line naming what is wrong
and a non-zero exit, never a traceback.

Every command of `mlflow-numerai` runs (in-process, with click's CliRunner on
`mlflow_numerai.cli:main`) on a table of bad inputs: missing, unreadable (a directory where a
file is expected, a file where a directory is expected), truncated, wrong columns and wrong
values. Each case asserts a non-zero exit, exactly one non-empty line on stderr once click's
usage lines are set aside, that line naming the bad thing, and no "Traceback" anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_numerai.cli import main
from mlflow_numerai.tracking import ensure_tracking_uri


@pytest.fixture(scope="module")
def bad(tmp_path_factory, synthetic_dir) -> dict[str, Path]:
    """Paths of bad inputs: a regular file, a truncated train.parquet, wrong columns, ..."""
    root = tmp_path_factory.mktemp("bad")
    paths = {"file": root / "a_file.txt", "missing": root / "does_not_exist", "dir": root / "a_dir"}
    paths["file"].write_text("not a directory\n")
    paths["dir"].mkdir()

    truncated = root / "truncated"
    shutil.copytree(synthetic_dir, truncated)
    (truncated / "train.parquet").write_bytes((synthetic_dir / "train.parquet").read_bytes()[:100])
    paths["truncated"] = truncated

    garbage = root / "garbage"
    shutil.copytree(synthetic_dir, garbage)
    (garbage / "train.parquet").write_bytes(b"this is not parquet\n" * 20)
    paths["garbage"] = garbage

    no_era = root / "no_era"
    shutil.copytree(synthetic_dir, no_era)
    pd.read_parquet(synthetic_dir / "train.parquet").drop(columns=["era"]).to_parquet(no_era / "train.parquet")
    paths["no_era"] = no_era

    no_features = root / "no_features"
    shutil.copytree(synthetic_dir, no_features)
    train = pd.read_parquet(synthetic_dir / "train.parquet")
    train[[c for c in train.columns if not c.startswith("feature")]].to_parquet(no_features / "train.parquet")
    paths["no_features"] = no_features

    paths["garbage_pkl"] = root / "predict.pkl"
    paths["garbage_pkl"].write_bytes(b"\x00garbage, not a pickle")
    paths["series_no_date"] = root / "series.csv"
    paths["series_no_date"].write_text("a,b\n1,2\n3,4\n")
    return paths


def _cases(bad: dict[str, Path], data: Path) -> list[tuple[list[str], str]]:
    """(arguments, what the one line must name)."""
    d = ["--data-dir", str(data)]
    f, missing = str(bad["file"]), str(bad["missing"])
    return [
        # data
        (["data", "synth", "--out", f"{f}/sub", "--no-progress"], f),
        (["data", "synth", "--out", f, "--no-progress"], f),
        (["data", "synth", "--out", str(bad["dir"] / "x"), "--rows-per-era", "-5", "--no-progress"],
         "--rows-per-era"),
        (["data", "synth", "--out", str(bad["dir"] / "x"), "--features", "0", "--no-progress"], "--features"),
        # train baseline
        (["train", "baseline", "--data-dir", missing], "--data-dir"),
        (["train", "baseline", "--data-dir", f], "--data-dir"),
        (["train", "baseline", "--data-dir", str(bad["truncated"]), "--registered-model-name", "none"],
         "train.parquet"),
        (["train", "baseline", "--data-dir", str(bad["garbage"]), "--registered-model-name", "none"],
         "train.parquet"),
        (["train", "baseline", "--data-dir", str(bad["no_features"]), "--registered-model-name", "none"],
         "feature_"),
        (["train", "baseline", *d, "--feature-set", "nope"], "--feature-set"),
        (["train", "baseline", *d, "--target", "target_nope"], "--target"),
        (["train", "baseline", *d, "--alpha", "-1"], "--alpha"),
        (["train", "baseline", *d, "--alpha", "nan"], "--alpha"),
        # train keras-stream
        (["train", "keras-stream", *d, "--hidden", "0"], "--hidden"),
        (["train", "keras-stream", *d, "--hidden", "16,x"], "--hidden"),
        (["train", "keras-stream", *d, "--epochs", "-1"], "--epochs"),
        (["train", "keras-stream", *d, "--learning-rate", "nan"], "--learning-rate"),
        (["train", "keras-stream", *d, "--targets", "target_nope"], "--targets"),
        (["train", "keras-stream", "--data-dir", missing], "--data-dir"),
        (["train", "keras-stream", "--data-dir", str(bad["truncated"]), "--registered-model-name", "none"],
         "train.parquet"),
        # train bayes-nn / bnn-study
        (["train", "bayes-nn", *d, "--hidden", "8-8-8-8"], "--hidden"),
        (["train", "bayes-nn", *d, "--hidden", "0"], "--hidden"),
        (["train", "bayes-nn", *d, "--prior", "cauchy"], "--prior"),
        (["train", "bayes-nn", *d, "--target-model", "h7"], "--target-model"),
        (["train", "bayes-nn", *d, "--lr", "-1"], "--learning-rate"),
        (["train", "bayes-nn", *d, "--epochs", "0"], "--epochs"),
        (["train", "bayes-nn", "--data-dir", missing], "--data-dir"),
        (["train", "bnn-study", *d, "--priors", "normal,cauchy"], "--priors"),
        (["train", "bnn-study", *d, "--architectures", ","], "--architectures"),
        # train varmax
        (["train", "varmax", "--data", missing, "--no-progress"], "--data"),
        (["train", "varmax", "--data", str(bad["series_no_date"]), "--no-progress"], "--data"),
        (["train", "varmax", "--preset", "nope", "--no-progress"], "--preset"),
        (["train", "varmax", "--workers", "-1", "--no-progress"], "--workers"),
        # validate
        (["validate", missing], missing),
        (["validate", str(bad["garbage_pkl"]), "--live", missing], "--live"),
        (["validate", str(bad["garbage_pkl"]), "--memory", "lots"], "--memory"),
        (["validate", str(bad["garbage_pkl"]), "--timeout", "-1"], "--timeout"),
        # promote
        (["promote", "numerai-nope", "--version", "latest"], "numerai-nope"),
        (["promote", "numerai-nope", "--version", "1", "--min-corr", "abc"], "--min-corr"),
        # ensemble
        (["ensemble", "blend", "--member", "models:/a/1", *d], "--member"),
        (["ensemble", "blend", "--member", "models:/a/1,models:/a/1", *d], "--member"),
        (["ensemble", "blend", "--member", "models:/a/1,models:/b/1", "--proportion", "2", *d], "--proportion"),
        (["ensemble", "blend", "--member", "models:/nope_a/1,models:/nope_b/1", *d], "nope_a"),
        (["ensemble", "blend", "--member", "models:/a/1,models:/b/1", "--data-dir", missing], missing),
        # study
        (["study", "ridge"], "ridge"),
        (["study", "keras", "--space", "width=1:3"], "--space"),
        (["study", "baseline", "--trials", "0"], "--trials"),
        # pipeline
        (["pipeline", "--steps", "nope"], "--steps"),
        (["pipeline", "--data-dir", missing], "--data-dir"),
        (["pipeline", "--param", "baseline.alpha"], "--param"),
        # dashboard
        (["dashboard", "--port", "0"], "--port"),
        (["dashboard", "--port", "abc"], "--port"),
    ]


def _error_lines(stderr: str) -> list[str]:
    """stderr without click's usage lines (`Usage: ...`, `Try '... -h' for help.`)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return [line for line in lines if not line.startswith(("Usage: ", "Try '"))]


def test_every_command_ends_bad_input_with_one_line(bad, synthetic_dir, tracking_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_NUMERAI_TRACEBACK", "0")
    monkeypatch.setenv("MLFLOW_NUMERAI_STUDY_STORAGE", f"sqlite:///{tmp_path / 'optuna.db'}")
    monkeypatch.chdir(tmp_path)
    ensure_tracking_uri(tracking_uri)  # MLflow logs the creation of a fresh store on stderr: not an error
    runner = CliRunner()
    failures = []
    for args, named in _cases(bad, synthetic_dir):
        result = runner.invoke(main, args)
        lines = _error_lines(result.stderr)
        problems = []
        if result.exit_code == 0:
            problems.append("exit 0")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problems.append(f"raised {type(result.exception).__name__}: {result.exception}")
        if len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines")
        elif named not in lines[0]:
            problems.append(f"the line does not name {named!r}")
        if "Traceback" in result.output + result.stderr:
            problems.append("a traceback")
        if problems:
            failures.append(f"{' '.join(args)}: {', '.join(problems)}\n    stderr: {result.stderr.strip()!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("args", [["data", "synth", "--out", "{file}/sub", "--no-progress"],
                                  ["train", "baseline", "--data-dir", "{truncated}", "--registered-model-name",
                                   "none"]])
def test_the_command_line_prints_no_traceback(args, bad, tracking_uri, tmp_path):
    """The two cases of the issue, as a user runs them (a process of its own)."""
    args = [a.format(file=bad["file"], truncated=bad["truncated"]) for a in args]
    ensure_tracking_uri(tracking_uri)  # MLflow logs the creation of a fresh store on stderr: not an error
    done = subprocess.run([sys.executable, "-m", "mlflow_numerai.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = _error_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert str(bad["file"]) in lines[0] or "train.parquet" in lines[0]


def test_data_download_checks_out_before_the_network(bad, tmp_path):
    result = CliRunner().invoke(main, ["data", "download", "--version", "v5.0", "--out", f"{bad['file']}/sub",
                                       "--no-progress"])
    lines = _error_lines(result.stderr)
    assert result.exit_code == 2 and len(lines) == 1 and str(bad["file"]) in lines[0], result.stderr
