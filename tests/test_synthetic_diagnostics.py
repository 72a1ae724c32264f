"""Synthetic data for the diagnostics (issue 14): a meta model like Numerai's and NaN features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlflow_numerai.data.io import DataError, feature_columns, read_split
from mlflow_numerai.data.synthetic import META_MODEL_COLUMN, SyntheticParams, generate_synthetic
from mlflow_numerai.scoring import per_era_corr_with, per_era_numerai_corr


def test_meta_model_covers_validation_and_correlates_like_numerai(synthetic_dir):
    meta = pd.read_parquet(synthetic_dir / "meta_model.parquet")
    validation = read_split(synthetic_dir, "validation", columns=["target"])
    assert meta.index.name == "id" and list(meta.columns) == ["era", META_MODEL_COLUMN]
    assert meta.index.sort_values().equals(validation.index.sort_values())
    bench = pd.read_parquet(synthetic_dir / "validation_benchmark_models.parquet")
    eras = validation["era"]
    with_bench = per_era_corr_with(meta[[META_MODEL_COLUMN]], bench["bench_all_nomi20"], eras).iloc[:, 0]
    with_target = per_era_numerai_corr(meta[[META_MODEL_COLUMN]], validation["target"], eras).iloc[:, 0]
    assert 0.6 < with_bench.mean() < 0.98  # close to the benchmark, not equal to it
    assert with_target.mean() > 0.01


def test_nan_percent_leaves_holes_and_keeps_the_rest(tmp_path):
    tiny = dict(eras_train=4, eras_validation=2, rows_per_era=60, n_features=10, progress=False)
    plain = generate_synthetic(tmp_path / "plain", **tiny)
    holes = generate_synthetic(tmp_path / "holes", nan_percent=5, **tiny)
    features = feature_columns(holes, "all")
    a = read_split(plain, "train")[features]
    b = read_split(holes, "train")[features]
    share = b.isna().to_numpy().mean()
    assert 0.03 < share < 0.07
    np.testing.assert_array_equal(b.to_numpy()[b.notna().to_numpy()], a.to_numpy()[b.notna().to_numpy()])
    assert SyntheticParams(nan_percent=5).data_version != SyntheticParams().data_version
    with pytest.raises(DataError, match="nan_percent"):
        SyntheticParams(nan_percent=80)
