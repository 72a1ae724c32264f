"""`mlflow-numerai data synth|download` and the numerapi downloader (with a fake client)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from mlflow_numerai.cli import data as data_cli
from mlflow_numerai.cli import main
from mlflow_numerai.data.io import DataError, data_version, read_split
from mlflow_numerai.data.numerai import REQUIRED_FILES, DownloadError, download_numerai

SYNTH = ["data", "synth", "--eras-train", "4", "--eras-validation", "2", "--rows-per-era", "40",
         "--features", "8", "--no-progress"]  # fmt: skip


def run(args):
    return CliRunner().invoke(main, args)


def one_line_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    return lines[0]


# ---------------------------------------------------------------- synth


def test_synth_writes_a_data_set(tmp_path):
    out = tmp_path / "d"
    result = run([*SYNTH, "--out", str(out), "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert data_version(out).startswith("synthetic-")
    assert data_version(out) in result.output
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["parameters"] == dict(eras_train=4, eras_validation=2, rows_per_era=40, n_features=8, seed=2)
    assert read_split(out, "train").shape[0] == 160


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--eras-train", "0"], "--eras-train must be an integer >= 1"),
        (["--eras-validation", "0"], "--eras-validation must be an integer >= 1"),
        (["--features", "4"], "--features must be an integer >= 5"),
        (["--rows-per-era", "abc"], "'abc' is not a valid integer"),
    ],
)
def test_synth_bad_arguments_are_one_line_exit_2(tmp_path, extra, message):
    result = run([*SYNTH, "--out", str(tmp_path / "d"), *extra])
    assert result.exit_code == 2
    assert message in one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_synth_missing_out_is_one_line_exit_2():
    result = run(SYNTH)
    assert result.exit_code == 2
    assert "--out" in one_line_error(result)


def test_synth_existing_directory_needs_overwrite(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = run([*SYNTH, "--out", str(out)])
    assert result.exit_code == 2
    assert "not empty" in one_line_error(result) and str(out) in result.output
    assert (out / "notes.txt").read_text() == "keep me"

    result = run([*SYNTH, "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (out / "notes.txt").exists() and (out / "features.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


# ---------------------------------------------------------------- download (fake numerapi client)


class FakeNumerAPI:
    """Serves a synthetic data directory as if it were Numerai's `version`."""

    def __init__(self, source, version="v5.0", fail_on=None, corrupt=None):
        self.source, self.version = source, version
        self.fail_on, self.corrupt = fail_on, corrupt
        self.downloaded: list[str] = []

    def get_current_round(self):
        return 1123

    def list_datasets(self):
        names = [p.name for p in self.source.iterdir() if p.name != "metadata.json"]
        return [f"{self.version}/{n}" for n in sorted(names)] + ["v4.3/train.parquet", "v4.3/features.json"]

    def download_dataset(self, filename, dest_path=None):
        name = filename.split("/", 1)[1]
        if name == self.fail_on:
            raise ConnectionError("connection reset by peer")
        self.downloaded.append(filename)
        if name == self.corrupt:
            with open(dest_path, "w") as fh:
                fh.write("<html>502 Bad Gateway</html>")
        else:
            shutil.copyfile(self.source / name, dest_path)
        return dest_path


@pytest.fixture()
def fake(synthetic_dir, monkeypatch):
    client = FakeNumerAPI(synthetic_dir)
    monkeypatch.setattr(data_cli, "_client", lambda: client)
    return client


def test_download_writes_files_and_metadata(tmp_path, fake, synthetic_dir):
    out = tmp_path / "real"
    result = run(["data", "download", "--version", "v5.0", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert data_version(out) == "v5.0"
    expected = set(REQUIRED_FILES) | {"validation_benchmark_models.parquet", "live_benchmark_models.parquet"}
    assert {p.name for p in out.iterdir()} == expected | {"metadata.json"}
    assert all(f.startswith("v5.0/") for f in fake.downloaded)
    meta = json.loads((out / "metadata.json").read_text())
    assert set(meta["files"]) == expected
    assert meta["files"]["train.parquet"]["bytes"] == (synthetic_dir / "train.parquet").stat().st_size
    assert len(meta["files"]["train.parquet"]["sha256"]) == 64
    assert meta["round"] == 1123
    assert read_split(out, "validation").equals(read_split(synthetic_dir, "validation"))


def test_download_unknown_version_lists_available(tmp_path, fake):
    result = run(["data", "download", "--version", "v9.9", "--out", str(tmp_path / "x"), "--no-progress"])
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "v9.9" in line and "v5.0" in line and "v4.3" in line
    assert fake.downloaded == [] and list(tmp_path.iterdir()) == []


def test_download_version_without_required_files(tmp_path, fake):
    result = run(["data", "download", "--version", "v4.3", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "validation.parquet" in one_line_error(result)


def test_download_malformed_version(tmp_path, fake):
    result = run(["data", "download", "--version", "latest", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "v5.0" in one_line_error(result)


def test_download_into_non_empty_directory_needs_overwrite(tmp_path, fake):
    out = tmp_path / "real"
    out.mkdir()
    (out / "x").write_text("x")
    result = run(["data", "download", "--version", "v5.0", "--out", str(out), "--no-progress"])
    assert result.exit_code == 2 and "not empty" in one_line_error(result)
    result = run(["data", "download", "--version", "v5.0", "--out", str(out), "--no-progress", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (out / "x").exists() and data_version(out) == "v5.0"


@pytest.mark.parametrize("broken", [dict(fail_on="live.parquet"), dict(corrupt="validation.parquet")])
def test_failed_download_leaves_nothing(tmp_path, synthetic_dir, monkeypatch, broken):
    monkeypatch.setattr(data_cli, "_client", lambda: FakeNumerAPI(synthetic_dir, **broken))
    result = run(["data", "download", "--version", "v5.0", "--out", str(tmp_path / "real"), "--no-progress"])
    assert result.exit_code == 1
    (bad_file,) = broken.values()
    assert bad_file in one_line_error(result)  # the error names the file that broke
    assert list(tmp_path.iterdir()) == []


def test_download_function_with_injected_client(tmp_path, synthetic_dir):
    client = FakeNumerAPI(synthetic_dir, corrupt="features.json")
    with pytest.raises(DownloadError, match="features.json"):
        download_numerai("v5.0", tmp_path / "a", client=client, progress=False)
    class NoRound(FakeNumerAPI):
        def get_current_round(self):
            raise OSError("timeout")

    path = download_numerai("v5.0", tmp_path / "b", client=NoRound(synthetic_dir), progress=False)
    assert data_version(path) == "v5.0"
    assert json.loads((path / "metadata.json").read_text())["round"] is None
    with pytest.raises(DataError, match="not empty"):
        download_numerai("v5.0", path, client=FakeNumerAPI(synthetic_dir), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_download_listing_failure_is_a_connection_error(tmp_path):
    class Offline:
        def list_datasets(self):
            raise OSError("Name or service not known")

    with pytest.raises(ConnectionError, match="could not list Numerai datasets"):
        download_numerai("v5.0", tmp_path / "x", client=Offline(), progress=False)
