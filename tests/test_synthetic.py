"""The synthetic Numerai data set: schema, determinism, atomic writes and the planted structure."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlflow_numerai.data import synthetic, synthetic_layout
from mlflow_numerai.data.io import DataError, data_version, feature_columns, load_feature_metadata, read_split
from mlflow_numerai.data.synthetic import (
    AUX_TARGETS,
    BENCHMARK_COLUMNS,
    TARGETS,
    Plan,
    SyntheticParams,
    generate_synthetic,
    planted_signal,
)
from mlflow_numerai.scoring import per_era_numerai_corr

FILES = (
    "train.parquet",
    "validation.parquet",
    "live.parquet",
    "features.json",
    "validation_benchmark_models.parquet",
    "live_benchmark_models.parquet",
    "meta_model.parquet",
    "metadata.json",
)
TINY = dict(eras_train=6, eras_validation=4, rows_per_era=50, n_features=12, progress=False)


def file_hashes(directory) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in FILES}


def siblings(path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# ---------------------------------------------------------------- schema (conftest: 60/24 eras, 200 rows, 60 features)


def test_layout_and_dtypes(synthetic_dir):
    assert sorted(p.name for p in synthetic_dir.iterdir()) == sorted(FILES)
    features = feature_columns(synthetic_dir, "all")
    assert len(features) == 60 and all(f.startswith("feature_") for f in features)
    for split, n_eras in (("train", 60), ("validation", 24), ("live", 1)):
        frame = read_split(synthetic_dir, split)
        assert frame.index.name == "id" and len(frame) == n_eras * 200
        assert (frame["data_type"] == split).all()
        assert list(frame[features].dtypes.unique()) == [np.dtype("int8")]
        assert frame[features].to_numpy().min() == 0 and frame[features].to_numpy().max() == 4
        assert all(frame[t].dtype == np.float32 for t in TARGETS)
    # pandas restores the `id` index by itself (pandas metadata), like Numerai's own files
    assert pd.read_parquet(synthetic_dir / "live.parquet", columns=["era"]).index.name == "id"


def test_eras_ids_continue_across_splits(synthetic_dir):
    frames = [read_split(synthetic_dir, s, ["target"]) for s in ("train", "validation", "live")]
    eras = [sorted(f["era"].unique()) for f in frames]
    assert eras[0][0] == "0001" and eras[0][-1] == "0060"
    assert eras[1][0] == "0061" and eras[1][-1] == "0084"
    assert eras[2] == ["0085"]
    ids = pd.Index(np.concatenate([f.index.to_numpy() for f in frames]))
    assert ids.is_unique and all(isinstance(i, str) for i in ids[:100])


def test_features_are_five_equal_bins_per_era(synthetic_dir):
    train = read_split(synthetic_dir, "train")
    features = feature_columns(synthetic_dir, "all")
    for _, era in list(train.groupby("era"))[:5]:
        counts = np.stack([np.bincount(era[f], minlength=5) for f in features])
        assert (counts == 40).all()


def test_targets_buckets_shares_and_missing(synthetic_dir):
    train = read_split(synthetic_dir, "train")
    validation = read_split(synthetic_dir, "validation")
    live = read_split(synthetic_dir, "live")
    for frame in (train, validation):
        assert frame["target"].notna().all()
        np.testing.assert_array_equal(frame["target"], frame["target_nomi_20"])
        for t in TARGETS:
            assert set(frame[t].dropna().unique()) <= {0.0, 0.25, 0.5, 0.75, 1.0}
        shares = frame.groupby("era")["target"].value_counts(normalize=True).unstack()
        np.testing.assert_allclose(shares.to_numpy(), np.tile([0.05, 0.2, 0.5, 0.2, 0.05], (len(shares), 1)))
    assert train[list(AUX_TARGETS)].isna().to_numpy().any()
    # 60-day targets of the last validation eras are not resolved yet
    assert validation.loc[validation["era"] == validation["era"].max(), "target_nomi_60"].isna().all()
    assert live[list(TARGETS)].isna().all().all()
    # related targets: 60-day correlates with 20-day; janet and george with nomi
    corr = train[list(TARGETS)].corr()
    assert 0.2 < corr.loc["target_nomi_20", "target_nomi_60"] < 0.9
    assert 0.2 < corr.loc["target_nomi_20", "target_janet_20"] < 0.9


def test_feature_sets_and_metadata(synthetic_dir):
    meta = load_feature_metadata(synthetic_dir)
    sets = meta["feature_sets"]
    assert {"small", "medium", "all"} <= set(sets)
    assert set(sets["small"]) < set(sets["medium"]) <= set(sets["all"])
    assert meta["targets"] == list(TARGETS)
    info = json.loads((synthetic_dir / "metadata.json").read_text())
    params = SyntheticParams(eras_train=60, eras_validation=24, rows_per_era=200, n_features=60, seed=7)
    assert data_version(synthetic_dir) == params.data_version == info["data_version"]
    assert info["data_version"].startswith("synthetic-")
    assert info["parameters"] == params.to_dict()
    assert SyntheticParams.from_data_dir(synthetic_dir) == params
    # every signal feature is in `medium`, about half of them in `small`
    signal = info["planted"]["signal_features"]
    assert set(signal) <= set(sets["medium"])
    assert 0 < len(set(signal) & set(sets["small"])) < len(signal)


def test_benchmark_files_match_their_split(synthetic_dir):
    for split in ("validation", "live"):
        bench = pd.read_parquet(synthetic_dir / f"{split}_benchmark_models.parquet")
        frame = read_split(synthetic_dir, split, ["target"])
        assert bench.index.name == "id"
        assert bench.index.equals(frame.index)
        assert (bench["era"] == frame["era"]).all()
        values = bench[list(BENCHMARK_COLUMNS)].to_numpy()
        assert values.dtype == np.float32 and values.min() > 0 and values.max() < 1


# ---------------------------------------------------------------- determinism and writing


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = generate_synthetic(tmp_path / "a", seed=3, **TINY)
    b = generate_synthetic(tmp_path / "b", seed=3, **TINY)
    c = generate_synthetic(tmp_path / "c", seed=4, **TINY)
    assert file_hashes(a) == file_hashes(b)
    assert file_hashes(a)["train.parquet"] != file_hashes(c)["train.parquet"]
    assert data_version(a) != data_version(c)
    # feature names do not depend on the seed
    assert feature_columns(a, "all") == feature_columns(c, "all")


def test_batching_into_row_groups_does_not_change_data(tmp_path, monkeypatch):
    one = generate_synthetic(tmp_path / "one", seed=1, **TINY)
    assert pq.ParquetFile(one / "train.parquet").metadata.num_row_groups == 1
    monkeypatch.setattr(synthetic_layout, "ROW_GROUP_BYTES", 1)  # one era per row group
    many = generate_synthetic(tmp_path / "many", seed=1, **TINY)
    assert pq.ParquetFile(many / "train.parquet").metadata.num_row_groups == 6
    pd.testing.assert_frame_equal(read_split(one, "train"), read_split(many, "train"))


def test_crash_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    real = synthetic.generate_era

    def crash_at_era_5(plan, era_index):
        if era_index == 5:
            raise RuntimeError("disk on fire")
        return real(plan, era_index)

    monkeypatch.setattr(synthetic, "generate_era", crash_at_era_5)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_synthetic(tmp_path / "out", **TINY)
    assert siblings(tmp_path / "out") == []


def test_existing_directory_needs_overwrite_and_is_replaced(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        generate_synthetic(out, **TINY)
    assert (out / "keep.txt").read_text() == "mine"

    # a crash while overwriting leaves the old directory untouched
    monkeypatch.setattr(synthetic, "generate_era", lambda plan, i: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        generate_synthetic(out, overwrite=True, **TINY)
    assert (out / "keep.txt").read_text() == "mine"
    monkeypatch.undo()

    generate_synthetic(out, overwrite=True, **TINY)
    assert not (out / "keep.txt").exists() and (out / "metadata.json").exists()
    assert siblings(out) == ["out"]
    # an existing empty directory is fine without overwrite
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_synthetic(empty, **TINY)
    assert (empty / "train.parquet").exists()


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(eras_train=0), "eras_train"),
        (dict(eras_validation=0), "eras_validation"),
        (dict(n_features=4), "n_features"),
        (dict(rows_per_era=10), "rows_per_era"),
        (dict(seed=-1), "seed"),
        (dict(eras_train=9990, eras_validation=20), "number of eras"),
    ],
)
def test_bad_parameters_are_named(tmp_path, bad, match):
    with pytest.raises(DataError, match=match):
        generate_synthetic(tmp_path / "out", **{**TINY, **bad})
    assert not (tmp_path / "out").exists()


def test_smallest_set(tmp_path):
    out = generate_synthetic(
        tmp_path / "s", eras_train=1, eras_validation=1, rows_per_era=20, n_features=5, progress=False
    )
    assert len(read_split(out, "train")) == 20 and len(feature_columns(out, "small")) >= 3


# ---------------------------------------------------------------- planted structure


@pytest.fixture(scope="module")
def structured(tmp_path_factory):
    params = SyntheticParams(eras_train=120, eras_validation=40, rows_per_era=400, n_features=60, seed=11)
    out = generate_synthetic(tmp_path_factory.mktemp("structured") / "d", progress=False, **params.to_dict())
    return out, params


def ridge_predictions(train: pd.DataFrame, other: pd.DataFrame, columns: list[str], alpha: float = 1.0) -> np.ndarray:
    x = train[columns].to_numpy(np.float64) - 2.0
    y = train["target"].to_numpy(np.float64) - 0.5
    w = np.linalg.solve(x.T @ x + alpha * np.eye(len(columns)), x.T @ y)
    return (other[columns].to_numpy(np.float64) - 2.0) @ w


def era_corr(frame: pd.DataFrame, values: np.ndarray) -> pd.Series:
    preds = pd.DataFrame({"p": values}, index=frame.index)
    return per_era_numerai_corr(preds, frame["target"], frame["era"])["p"]


def test_linear_fit_finds_signal_and_burns_in_burn_eras(structured):
    out, params = structured
    info = json.loads((out / "metadata.json").read_text())
    signal = info["planted"]["signal_features"]
    train, validation = read_split(out, "train"), read_split(out, "validation")
    linear = era_corr(validation, ridge_predictions(train, validation, signal))
    noiseless = era_corr(validation, planted_signal(validation, params).to_numpy())

    assert 0.02 < linear.mean() < 0.3
    assert noiseless.mean() > linear.mean() + 0.01
    burn = linear.index.isin(info["planted"]["burn_eras"])
    assert 0.15 <= burn.mean() <= 0.25 and 0.15 <= info["planted"]["burn_share"]["train"] <= 0.25
    assert linear[burn].mean() < 0 < linear[~burn].mean()
    assert (linear[burn] < 0).mean() > 0.5


def test_burn_eras_have_a_different_feature_regime(structured):
    out, _ = structured
    info = json.loads((out / "metadata.json").read_text())
    validation = read_split(out, "validation")
    features = feature_columns(out, "all")

    def mean_abs_corr(era_frame):
        c = np.corrcoef(era_frame[features].to_numpy(np.float64).T)
        return np.abs(c[np.triu_indices_from(c, 1)]).mean()

    co_move = validation.groupby("era").apply(mean_abs_corr)
    burn = co_move.index.isin(info["planted"]["burn_eras"])
    assert co_move[burn].max() < co_move[~burn].min()  # group co-movement breaks down


def test_ensemble_disagreement_flags_burn_eras(structured):
    """What the Bayesian-NN study relies on: members of an ensemble disagree more in burn eras."""
    out, _ = structured
    info = json.loads((out / "metadata.json").read_text())
    train, validation = read_split(out, "train"), read_split(out, "validation")
    features = feature_columns(out, "all")
    n_eras = train["era"].nunique()  # train is sorted by era, equal rows per era
    x = (train[features].to_numpy(np.float64) - 2.0).reshape(n_eras, -1, len(features))
    y = (train["target"].to_numpy(np.float64) - 0.5).reshape(n_eras, -1)
    gram, cov = np.einsum("eri,erj->eij", x, x), np.einsum("eri,er->ei", x, y)  # per era
    xv = validation[features].to_numpy(np.float64) - 2.0
    rng = np.random.default_rng(0)
    members = []
    for _ in range(30):  # era-bootstrap ridge fits: a cheap stand-in for posterior samples
        counts = np.bincount(rng.integers(0, n_eras, n_eras), minlength=n_eras).astype(float)
        a = np.tensordot(counts, gram, 1) + 10 * np.eye(len(features))
        members.append(xv @ np.linalg.solve(a, counts @ cov))
    spread = pd.Series(np.std(members, axis=0), index=validation.index).groupby(validation["era"]).mean()
    burn = spread.index.isin(info["planted"]["burn_eras"])
    auc = (spread[burn].to_numpy()[:, None] > spread[~burn].to_numpy()[None, :]).mean()
    assert auc > 0.7  # 0.78 for this seed; 0.82, 0.93 for seeds 21, 20
    ensemble = era_corr(validation, np.mean(members, axis=0))
    member_mean = np.mean([era_corr(validation, m).mean() for m in members[:5]])
    assert ensemble.mean() > member_mean


def test_planted_signal_validates_its_input(structured):
    out, params = structured
    frame = read_split(out, "validation")
    with pytest.raises(DataError, match="unknown target"):
        planted_signal(frame, params, "target_bob_20")
    with pytest.raises(DataError, match="lacks column"):
        planted_signal(frame[["era"]], params)
    s60 = planted_signal(frame, params, "target_nomi_60")
    assert s60.notna().all() and not np.allclose(s60, planted_signal(frame, params))


def test_plan_is_deterministic():
    a, b = Plan(SyntheticParams(seed=5)), Plan(SyntheticParams(seed=5))
    np.testing.assert_array_equal(a.signal, b.signal)
    np.testing.assert_array_equal(a.weights_20["nomi"], b.weights_20["nomi"])
    assert a.feature_sets == b.feature_sets
    assert len(a.feature_sets["small"]) == 40 and len(a.feature_sets["all"]) == 240


def test_bins_are_exact_even_with_ties():
    values = np.array([[0.0] * 6 + [1.0] * 4, np.arange(10.0)[::-1]])
    bins = synthetic.equal_bins(values)
    assert (np.stack([np.bincount(r, minlength=5) for r in bins]) == 2).all()
    np.testing.assert_array_equal(bins[0], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])  # ties split by position
    np.testing.assert_array_equal(bins[1], [4, 4, 3, 3, 2, 2, 1, 1, 0, 0])
    buckets = synthetic.shares_bins(np.arange(100.0)[None, :], synthetic.BUCKET_SHARES)[0]
    np.testing.assert_array_equal(np.bincount(buckets), [5, 20, 50, 20, 5])


KILLED_CHILD = """
import sys, time
from mlflow_numerai.data import synthetic
real = synthetic.generate_era
def slow(plan, i):
    if i == 5:
        print("era 5", flush=True)
        time.sleep(60)
    return real(plan, i)
synthetic.generate_era = slow
synthetic.generate_synthetic(sys.argv[1], eras_train=6, eras_validation=4, rows_per_era=50, n_features=12,
                             progress=False)
"""


def test_killed_run_leaves_no_complete_directory_and_is_cleaned_up(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "era 5"  # mid-run, files open
    finally:
        child.kill()
        child.wait()
    assert not out.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    assert len(leftovers) == 1 and not (leftovers[0] / "metadata.json").exists()
    with pytest.raises(DataError, match="does not exist"):
        read_split(out, "train")
    generate_synthetic(out, **TINY)  # the next run removes the dead writer's temporary directory
    assert siblings(out) == ["out"]


def test_default_set_is_made_once_and_remade_for_a_new_generator(tmp_path, monkeypatch):
    from mlflow_numerai.data.io import resolve_data_dir

    monkeypatch.setenv("MLFLOW_NUMERAI_CACHE", str(tmp_path))
    calls = []

    def fake_generate(out, **kwargs):
        calls.append(kwargs)
        out.mkdir(parents=True, exist_ok=True)
        (out / "features.json").write_text("{}")
        (out / "metadata.json").write_text(json.dumps({"data_version": SyntheticParams().data_version}))
        return out

    monkeypatch.setattr(synthetic, "generate_synthetic", fake_generate)
    stale = tmp_path / "synthetic-default"
    stale.mkdir()
    (stale / "metadata.json").write_text(json.dumps({"data_version": "synthetic-from-an-older-generator"}))
    assert resolve_data_dir("synthetic") == stale
    assert calls == [{"overwrite": True}]
    assert resolve_data_dir("synthetic") == stale  # up to date: reused
    assert len(calls) == 1
