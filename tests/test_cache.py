"""The era-sharded int8 cache: contents, reuse, rebuild, atomicity, corruption, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlflow_numerai.data.cache import CacheError, build_cache, open_cache
from mlflow_numerai.data.io import DataError, feature_columns

TARGETS = ["target", "target_nomi_60"]


def expected_arrays(parquet: Path, features: list[str], targets: list[str]):
    """What the cache should hold: NaN-target rows dropped, eras sorted, file order within."""
    frame = pd.read_parquet(parquet)
    frame = frame.dropna(subset=targets).sort_values("era", kind="stable")
    return frame[features].to_numpy(np.int8), frame[targets].to_numpy(np.float32), frame["era"].to_numpy()


def cache_features(cache) -> np.ndarray:
    return np.concatenate([np.asarray(cache.era_x(i)) for i in range(len(cache.eras))])


def small_parquet(path: Path, n: int = 60, seed: int = 0, **overrides) -> Path:
    """A tiny Numerai-like parquet, eras deliberately out of order in the file."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "id": [f"id{i}" for i in range(n)],
            "era": rng.choice(["0003", "0001", "0002"], size=n),
            "feature_a": rng.integers(0, 5, n).astype(np.int8),
            "feature_b": rng.integers(0, 5, n).astype(np.int8),
            "target": rng.choice([0, 0.25, 0.5, 0.75, 1.0], size=n).astype(np.float32),
        }
    )
    for key, value in overrides.items():
        frame[key] = value
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=17)
    return path


@pytest.fixture(scope="module")
def features(synthetic_dir):
    return feature_columns(synthetic_dir, "all")


def test_cache_holds_the_parquet_rows_by_era(synthetic_dir, features, tmp_path):
    parquet = synthetic_dir / "train.parquet"
    cache = build_cache(parquet, tmp_path / "c", features, TARGETS, progress=False)
    x, y, eras = expected_arrays(parquet, features, TARGETS)
    assert cache.n_rows == len(x)
    assert cache.eras == sorted(set(eras))
    assert np.array_equal(cache_features(cache), x)
    assert np.array_equal(np.asarray(cache.targets_array()), y)
    assert np.array_equal(cache.era_labels(), eras)
    assert cache.era_x(0).dtype == np.int8 and cache.era_x(0).flags.c_contiguous
    # every shard loads with numpy's own memory map too
    shard = np.load(cache.path / cache.manifest["eras"][0]["file"], mmap_mode="r")
    assert shard.shape == (cache.counts[0], len(features))
    total = len(pd.read_parquet(parquet, columns=TARGETS))
    assert cache.manifest["rows_dropped_nan_target"] == total - len(x) > 0  # the aux target has NaNs


def test_eras_out_of_file_order_and_small_row_groups(tmp_path):
    parquet = small_parquet(tmp_path / "s.parquet")
    cache = build_cache(parquet, tmp_path / "c", ["feature_b", "feature_a"], ["target"], progress=False)
    x, y, eras = expected_arrays(parquet, ["feature_b", "feature_a"], ["target"])
    assert cache.eras == ["0001", "0002", "0003"]
    assert np.array_equal(cache_features(cache), x)
    assert np.array_equal(np.asarray(cache.targets_array()), y)


def test_reused_while_source_unchanged(synthetic_dir, features, tmp_path):
    parquet = synthetic_dir / "validation.parquet"
    first = build_cache(parquet, tmp_path / "c", features, ["target"], progress=False)
    stamp = (first.path / "manifest.json").stat().st_mtime_ns
    second = build_cache(parquet, tmp_path / "c", features, ["target"], progress=False)
    assert (second.path / "manifest.json").stat().st_mtime_ns == stamp
    assert second.manifest == first.manifest


def test_rebuilt_when_source_or_columns_change(tmp_path):
    parquet = small_parquet(tmp_path / "s.parquet", seed=1)
    out = tmp_path / "c"
    first = build_cache(parquet, out, ["feature_a"], ["target"], progress=False)
    small_parquet(parquet, seed=2)  # new content, same path
    second = build_cache(parquet, out, ["feature_a"], ["target"], progress=False)
    assert second.manifest["source"] != first.manifest["source"]
    assert np.array_equal(cache_features(second), expected_arrays(parquet, ["feature_a"], ["target"])[0])
    third = build_cache(parquet, out, ["feature_a", "feature_b"], ["target"], progress=False)
    assert third.features == ["feature_a", "feature_b"]
    assert cache_features(third).shape[1] == 2
    assert not list(tmp_path.glob(".c.tmp-*")) and not list(tmp_path.glob(".c.old-*"))


def test_truncated_or_altered_shard_is_detected_and_rebuilt(tmp_path):
    parquet = small_parquet(tmp_path / "s.parquet")
    out = tmp_path / "c"
    cache = build_cache(parquet, out, ["feature_a", "feature_b"], ["target"], progress=False)
    good = cache_features(cache)
    shard = out / cache.manifest["eras"][1]["file"]
    data = shard.read_bytes()
    shard.write_bytes(data[:-5])
    with pytest.raises(CacheError, match=cache.manifest["eras"][1]["file"]):
        open_cache(out)
    rebuilt = build_cache(parquet, out, ["feature_a", "feature_b"], ["target"], progress=False)
    assert np.array_equal(cache_features(rebuilt), good)
    shard = out / rebuilt.manifest["eras"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[-1] = (data[-1] + 1) % 5  # same size, altered content
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="manifest hash"):
        open_cache(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(CacheError, match="unreadable"):
        open_cache(out)
    rebuilt = build_cache(parquet, out, ["feature_a", "feature_b"], ["target"], progress=False)
    assert np.array_equal(cache_features(rebuilt), good)


def test_killed_build_leaves_nothing_read_as_valid(tmp_path):
    """A build killed mid-way (os._exit: no cleanup runs) leaves no cache that opens."""
    parquet = small_parquet(tmp_path / "s.parquet", n=200)
    out = tmp_path / "c"
    script = textwrap.dedent(
        f"""
        import os
        import mlflow_numerai.data.cache as cache
        real = cache._feature_block
        calls = []
        def dying(*args):
            calls.append(1)
            if len(calls) == 3:
                os._exit(9)
            return real(*args)
        cache._feature_block = dying
        cache.BATCH_BYTES = 40  # 20 rows per batch: several batches
        cache.build_cache({str(parquet)!r}, {str(out)!r}, ["feature_a", "feature_b"], ["target"], progress=False)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert list(tmp_path.glob(".c.tmp-*")), "the killed build should have left its temporary directory"
    with pytest.raises(CacheError):
        open_cache(out)
    cache = build_cache(parquet, out, ["feature_a", "feature_b"], ["target"], progress=False)
    assert np.array_equal(cache_features(cache), expected_arrays(parquet, ["feature_a", "feature_b"], ["target"])[0])
    assert not list(tmp_path.glob(".c.tmp-*"))


def test_failed_build_keeps_the_old_cache_untouched(tmp_path, monkeypatch):
    import mlflow_numerai.data.cache as cache_module

    parquet = small_parquet(tmp_path / "s.parquet")
    out = tmp_path / "c"
    build_cache(parquet, out, ["feature_a"], ["target"], progress=False)
    before = json.loads((out / "manifest.json").read_text())

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(cache_module, "_feature_block", broken)
    with pytest.raises(OSError, match="disk full"):
        build_cache(parquet, out, ["feature_a", "feature_b"], ["target"], progress=False)
    assert json.loads((out / "manifest.json").read_text()) == before
    assert open_cache(out).features == ["feature_a"]
    assert not list(tmp_path.glob(".c.tmp-*"))


def test_missing_columns_are_named(synthetic_dir, features, tmp_path):
    parquet = synthetic_dir / "validation.parquet"
    with pytest.raises(DataError, match="feature column.*feature_nope"):
        build_cache(parquet, tmp_path / "c", [*features[:3], "feature_nope"], ["target"], progress=False)
    with pytest.raises(DataError, match="target column.*target_nope"):
        build_cache(parquet, tmp_path / "c", features[:3], ["target", "target_nope"], progress=False)
    with pytest.raises(DataError, match="does not exist"):
        build_cache(tmp_path / "missing.parquet", tmp_path / "c", features[:3], ["target"], progress=False)
    assert not (tmp_path / "c").exists()


def test_nan_features_become_the_middle_bin_and_are_counted(tmp_path, caplog):
    n = 60
    a = np.arange(n, dtype=np.float64) % 5
    a[[3, 10, 11]] = np.nan  # float column with NaN
    b = pd.array(np.arange(n) % 5, dtype="Int8")
    b[[0, 59]] = pd.NA  # integer column with nulls
    parquet = small_parquet(tmp_path / "s.parquet", feature_a=a, feature_b=b)
    with caplog.at_level("WARNING"):
        cache = build_cache(parquet, tmp_path / "c", ["feature_a", "feature_b"], ["target"], progress=False)
    assert cache.manifest["nan_features_filled"] == 5
    assert "5 NaN feature value(s)" in caplog.text
    frame = pd.read_parquet(parquet).sort_values("era", kind="stable")
    expected = frame[["feature_a", "feature_b"]].astype("float64").fillna(2).to_numpy(np.int8)
    assert np.array_equal(cache_features(cache), expected)


def test_feature_values_outside_bins_are_rejected(tmp_path):
    values = np.arange(60) % 5
    values[7] = 9
    parquet = small_parquet(tmp_path / "s.parquet", feature_b=values.astype(np.int8))
    with pytest.raises(DataError, match="feature_b"):
        build_cache(parquet, tmp_path / "c", ["feature_a", "feature_b"], ["target"], progress=False)
    assert not (tmp_path / "c").exists()
    assert not list(tmp_path.glob(".c.tmp-*"))


def test_duplicate_or_empty_columns_are_rejected(tmp_path):
    parquet = small_parquet(tmp_path / "s.parquet")
    with pytest.raises(DataError, match="duplicate feature"):
        build_cache(parquet, tmp_path / "c", ["feature_a", "feature_a"], ["target"], progress=False)
    with pytest.raises(DataError, match="at least one target"):
        build_cache(parquet, tmp_path / "c", ["feature_a"], [], progress=False)


def test_cache_path_that_is_a_file_is_an_error(tmp_path):
    parquet = small_parquet(tmp_path / "s.parquet")
    (tmp_path / "c").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        build_cache(parquet, tmp_path / "c", ["feature_a"], ["target"], progress=False)
    assert os.path.isfile(tmp_path / "c")
