"""Scoring: numerai-tools' anchors, equality with a straightforward pandas implementation of the
numerai-tools recipe (per era, per column), and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy.stats import norm

from mlflow_numerai import scoring
from mlflow_numerai.scoring import ScoringError
from mlflow_numerai.scoring import features as scoring_features
from mlflow_numerai.scoring._kernels import _gauss_rows

TOL = 1e-9


# ---------------------------------------------------------------------------------------------
# Reference: the numerai-tools recipe written plainly, one era and one column at a time
# ---------------------------------------------------------------------------------------------


def ref_gauss(s: pd.Series) -> pd.Series:
    ranked = (s.rank(method="average") - 0.5) / s.count()
    return pd.Series(norm.ppf(ranked), index=s.index)


def ref_pow(s: pd.Series) -> pd.Series:
    return np.sign(s) * np.abs(s) ** 1.5


def ref_numerai_corr_one(pred: pd.Series, target: pd.Series) -> float:
    target = target - target.mean()
    ids = pred.dropna().index.intersection(target.dropna().index)
    pred, target = pred.loc[ids].sort_index(), target.loc[ids].sort_index()
    return ref_pow(target).corr(ref_pow(ref_gauss(pred)))


def ref_mmc_one(pred: pd.Series, meta: pd.Series, target: pd.Series) -> float:
    ids = pred.dropna().index.intersection(meta.dropna().index).intersection(target.dropna().index)
    p = ref_gauss(pred.loc[ids].sort_index()).to_numpy()
    m = ref_gauss(meta.loc[ids].sort_index()).to_numpy()
    t = target.loc[ids].sort_index()
    neutral = p - m * (p @ m) / (m @ m)
    if (t >= 0).all() and (t <= 1).all():
        t = t * 4
    t = t - t.mean()
    return float(t.to_numpy() @ neutral / len(t))


def ref_fnc_one(pred: pd.Series, features: pd.DataFrame, target: pd.Series) -> float:
    g = ref_gauss(pred).to_numpy()[:, None]
    x = np.hstack([features.loc[pred.index].to_numpy(float), np.ones((len(pred), 1))])
    neutral = g - x @ (np.linalg.pinv(x, rcond=1e-6) @ g)
    neutral = neutral / np.std(neutral, axis=0)
    return ref_numerai_corr_one(pd.Series(neutral[:, 0], index=pred.index), target)


def ref_per_era(score_one, preds: pd.DataFrame, eras: pd.Series, *others) -> pd.DataFrame:
    """Apply ``score_one(pred_column, *others_of_the_era)`` era by era, column by column."""
    out = {}
    for era in sorted(eras.reindex(preds.index).unique()):
        era_ids = eras.index[eras == era]
        p = preds.loc[preds.index.intersection(era_ids)]
        sliced = [o.loc[o.index.intersection(era_ids)] for o in others]
        out[era] = pd.Series({c: score_one(p[c], *sliced) for c in p.columns})
    return pd.DataFrame(out).T


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def make_data(seed=0, n_eras=6, rows=120, k=5, shuffle=True):
    rng = np.random.default_rng(seed)
    n = n_eras * rows
    ids = pd.Index([f"n{i:06d}" for i in range(n)], name="id")
    eras = pd.Series([f"{e:04d}" for e in np.repeat(np.arange(1, n_eras + 1), rows)], index=ids, name="era")
    signal = rng.normal(size=n)
    target = pd.Series(np.clip(np.round((signal * 0.3 + rng.normal(size=n)) + 2), 0, 4) / 4, index=ids)
    cols = {}
    for j in range(k):
        cols[f"p{j}"] = signal * (j / k) + rng.normal(size=n)
    preds = pd.DataFrame(cols, index=ids)
    if k > 2:
        preds["p1"] = np.round(preds["p1"] * 2) / 2  # heavy ties
        preds["p2"] = preds["p2"].astype(np.float32).astype(np.float64)  # float32-exact values
    if shuffle:
        order = rng.permutation(n)
        preds, target, eras = preds.iloc[order], target.iloc[order], eras.iloc[order]
    return preds, target, eras


# ---------------------------------------------------------------------------------------------
# Anchors (numerai-tools' published values)
# ---------------------------------------------------------------------------------------------


def test_tie_kept_rank_anchor():
    ranked = scoring.tie_kept_rank(pd.DataFrame({"x": [0.0, 1, 2, 3, 4]}))
    np.testing.assert_allclose(ranked["x"], [0.1, 0.3, 0.5, 0.7, 0.9], rtol=0, atol=1e-15)


ANCHOR = [-1.4507885796854221, -0.3797472709071263, 0, 0.3797472709071261, 1.4507885796854221]


def test_rank_gauss_pow_anchor():
    out = scoring.rank_gauss_pow(pd.DataFrame({"x": [0, 0.25, 0.5, 0.75, 1]}))
    np.testing.assert_allclose(out["x"], ANCHOR, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorized_transform_anchor(dtype):
    # the fast kernel (both sort paths), several columns at once, rows in any order
    values = np.array([[0, 1], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1, 0]], dtype=dtype)
    out = _gauss_rows(values, 1.5)
    np.testing.assert_allclose(out[0], ANCHOR, rtol=0, atol=1e-15)
    np.testing.assert_allclose(out[1], ANCHOR[::-1], rtol=0, atol=1e-15)


def test_vectorized_transform_ties_and_negatives():
    values = np.array([[-0.0], [0.0], [-1.5], [2.0], [2.0], [2.0], [-3.0]])
    for v in (values, values.astype(np.float32), values + 1e-300 * 0):
        got = _gauss_rows(v, None)[0]
        want = ref_gauss(pd.Series(v[:, 0].astype(float)))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Equality with the straightforward pandas implementation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [True, False])
def test_per_era_numerai_corr_equals_pandas(shuffle):
    preds, target, eras = make_data(shuffle=shuffle)
    got = scoring.per_era_numerai_corr(preds, target, eras)
    want = ref_per_era(ref_numerai_corr_one, preds, eras, target)
    assert list(got.index) == list(want.index) and got.index.name == "era"
    np.testing.assert_allclose(got.to_numpy(), want.loc[got.index, got.columns].to_numpy(), rtol=0, atol=TOL)
    assert got.notna().all().all()


def test_per_era_numerai_corr_float32_input_equals_pandas():
    preds, target, eras = make_data(seed=3)
    preds32 = preds.astype(np.float32)
    got = scoring.per_era_numerai_corr(preds32, target, eras)
    want = ref_per_era(ref_numerai_corr_one, preds32.astype(np.float64), eras, target)
    np.testing.assert_allclose(got.to_numpy(), want.loc[got.index, got.columns].to_numpy(), rtol=0, atol=TOL)


def test_ids_missing_from_target_and_extra_target_ids():
    preds, target, eras = make_data(seed=1)
    target = target.copy()
    target.iloc[::13] = np.nan  # ids with a NaN target
    target = target.drop(target.index[5::11])  # ids absent from the target
    # ids only the target has (with an era): they move each era's mean, as in numerai-tools
    extra_ids = pd.Index([f"x{i}" for i in range(12)])
    extra_eras = pd.Series(eras.iloc[:12].to_numpy(), index=extra_ids)
    target = pd.concat([target, pd.Series(np.linspace(0, 1, 12), index=extra_ids)])
    all_eras = pd.concat([eras, extra_eras])
    got = scoring.per_era_numerai_corr(preds, target, all_eras)
    want = ref_per_era(ref_numerai_corr_one, preds, all_eras, target)
    np.testing.assert_allclose(got.to_numpy(), want.loc[got.index, got.columns].to_numpy(), rtol=0, atol=TOL)


def test_numerai_corr_equals_pandas():
    preds, target, _ = make_data(seed=2)
    target = target.drop(target.index[::9])
    got = scoring.numerai_corr(preds, target)
    want = pd.Series({c: ref_numerai_corr_one(preds[c], target) for c in preds.columns})
    np.testing.assert_allclose(got[want.index], want, rtol=0, atol=TOL)
    assert isinstance(got, pd.Series) and list(got.index) == list(preds.columns)


def test_many_columns_at_once_match_one_at_a_time():
    # chunking over columns must not mix columns up
    rng = np.random.default_rng(5)
    preds, target, eras = make_data(seed=5, n_eras=3, rows=80, k=2)
    wide = pd.DataFrame(rng.random((len(preds), 150)), index=preds.index).astype(np.float32)
    wide.columns = [f"s{j}" for j in range(150)]
    wide.iloc[:, ::7] = np.round(wide.iloc[:, ::7] * 3)  # some columns with ties
    got = scoring.per_era_numerai_corr(wide, target, eras)
    for col in ["s0", "s63", "s64", "s65", "s149"]:
        one = scoring.per_era_numerai_corr(wide[[col]], target, eras)[col]
        pd.testing.assert_series_equal(got[col], one)
    want = ref_per_era(ref_numerai_corr_one, wide[["s0", "s64", "s149"]].astype(float), eras, target)
    np.testing.assert_allclose(got[want.columns].to_numpy(), want.to_numpy(), rtol=0, atol=TOL)


def test_per_era_mmc_equals_pandas():
    preds, target, eras = make_data(seed=4)
    rng = np.random.default_rng(4)
    meta = (preds["p3"] + rng.normal(size=len(preds))).rename("meta")
    meta.iloc[::17] = np.nan
    got = scoring.per_era_correlation_contribution(preds, meta, target, eras)
    want = ref_per_era(ref_mmc_one, preds, eras, meta, target)
    np.testing.assert_allclose(got.to_numpy(), want.loc[got.index, got.columns].to_numpy(), rtol=0, atol=TOL)
    whole = scoring.correlation_contribution(preds, meta, target)
    np.testing.assert_allclose(
        whole, [ref_mmc_one(preds[c], meta, target) for c in preds.columns], rtol=0, atol=TOL
    )


def test_mmc_of_the_meta_model_itself_is_zero():
    preds, target, eras = make_data(seed=6, k=2)
    got = scoring.correlation_contribution(preds[["p0"]], preds["p0"], target)
    assert abs(got["p0"]) < 1e-12


def test_feature_neutral_corr_equals_pandas():
    preds, target, eras = make_data(seed=7, n_eras=3, rows=150)
    rng = np.random.default_rng(7)
    features = pd.DataFrame(rng.integers(0, 5, (len(preds), 4)), index=preds.index, columns=list("abcd"))
    preds["p4"] = preds["p4"] + features["a"]  # a column with real feature exposure
    got = scoring.per_era_feature_neutral_corr(preds, features, target, eras)
    want = ref_per_era(ref_fnc_one, preds, eras, features, target)
    np.testing.assert_allclose(got.to_numpy(), want.loc[got.index, got.columns].to_numpy(), rtol=0, atol=TOL)
    whole = scoring.feature_neutral_corr(preds, features, target)
    np.testing.assert_allclose(
        whole, [ref_fnc_one(preds[c], features, target) for c in preds.columns], rtol=0, atol=TOL
    )


def test_feature_exposure_and_max_feature_exposure():
    preds, _, eras = make_data(seed=8, k=2, shuffle=False)
    rng = np.random.default_rng(8)
    features = pd.DataFrame(rng.integers(0, 5, (len(preds), 3)), index=preds.index, columns=["f0", "f1", "f2"])
    preds["p1"] = features["f1"] * 2 + rng.normal(size=len(preds))
    exposure = scoring.feature_exposure(preds, features)
    want = pd.DataFrame({c: features.corrwith(preds[c]) for c in preds.columns})
    np.testing.assert_allclose(exposure.to_numpy(), want.to_numpy(), rtol=0, atol=TOL)
    per_era = scoring.max_feature_exposure(preds, features, eras)
    by_era = pd.DataFrame(
        {
            e: features.loc[ids].corrwith(preds.loc[ids, "p1"]).abs().max()
            for e, ids in eras.groupby(eras).groups.items()
        },
        index=[0],
    ).T[0]
    assert per_era["p1"] == pytest.approx(by_era.mean(), abs=TOL)
    assert per_era["p1"] > 0.5 > per_era["p0"]
    assert scoring.max_feature_exposure(preds, features)["p1"] == pytest.approx(exposure["p1"].abs().max())


# ---------------------------------------------------------------------------------------------
# Summaries, burn AUC, JS divergence
# ---------------------------------------------------------------------------------------------


def test_summaries():
    s = pd.Series([0.1, -0.2, 0.05, 0.3, -0.1])
    assert scoring.max_drawdown(s) == pytest.approx(0.2)
    assert scoring.sharpe(s) == pytest.approx(s.mean() / s.std(ddof=1))
    frame = pd.DataFrame({"a": s, "b": [0.1, np.nan, 0.1, 0.2, 0.1]})
    summary = scoring.score_summary(frame)
    assert list(summary.columns) == [
        "mean", "std", "sharpe", "smart_sharpe", "max_drawdown", "positive_share", "n_eras"
    ]
    assert summary.loc["b", "n_eras"] == 4 and summary.loc["b", "max_drawdown"] == 0
    assert summary.loc["a", "mean"] == pytest.approx(0.03)


def test_burn_auc():
    eras = pd.Index([f"{i:04d}" for i in range(8)])
    corr = pd.Series([0.02, -0.01, 0.03, -0.02, 0.01, 0.04, -0.03, 0.02], index=eras)
    perfect = pd.Series(-corr.to_numpy(), index=eras)
    assert scoring.burn_auc(perfect, corr) == 1.0
    assert scoring.burn_auc(corr, corr) == 0.0
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    noisy = pd.Series(rng.normal(size=8), index=eras).iloc[::-1]  # order must not matter
    want = sklearn_metrics.roc_auc_score((corr < 0).to_numpy(), noisy.reindex(eras).to_numpy())
    assert scoring.burn_auc(noisy, corr) == pytest.approx(want)
    roc = scoring.burn_roc_curve(noisy, corr)
    assert (roc.iloc[0][["fpr", "tpr"]] == 0).all() and (roc.iloc[-1][["fpr", "tpr"]] == 1).all()
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(want)


def test_burn_auc_one_class_is_nan_with_reason():
    eras = pd.Index(["0001", "0002", "0003"])
    with pytest.warns(RuntimeWarning, match="needs both"):
        assert np.isnan(scoring.burn_auc(pd.Series([1.0, 2, 3], index=eras), pd.Series([0.1, 0.2, 0.3], index=eras)))


def test_burn_auc_misaligned_eras():
    with pytest.raises(ScoringError, match="different eras"):
        scoring.burn_auc(pd.Series([1.0, 2], index=["0001", "0002"]), pd.Series([0.1, -0.2], index=["0001", "0003"]))


def _js_quad(mu1, sd1, mu2, sd2):
    def integrand(x):
        p, q = norm.pdf(x, mu1, sd1), norm.pdf(x, mu2, sd2)
        m = (p + q) / 2
        return 0.5 * (p * np.log(p / m) if p > 0 else 0) + 0.5 * (q * np.log(q / m) if q > 0 else 0)

    lo, hi = min(mu1 - 15 * sd1, mu2 - 15 * sd2), max(mu1 + 15 * sd1, mu2 + 15 * sd2)
    return integrate.quad(integrand, lo, hi, points=[mu1, mu2], limit=500)[0]


@pytest.mark.parametrize("args", [(0, 1, 0.5, 1), (0.02, 0.003, 0.018, 0.004), (0, 1, 0, 5), (0.01, 1e-3, 0.0, 1e-1)])
def test_js_divergence_normal_matches_quadrature(args):
    got = scoring.js_divergence_normal(*args)
    assert got == pytest.approx(_js_quad(*args), abs=1e-9)
    assert got == pytest.approx(scoring.js_divergence_normal(*args[2:], *args[:2]), abs=1e-12)  # symmetric


def test_js_divergence_normal_bounds():
    assert scoring.js_divergence_normal(0.1, 0.02, 0.1, 0.02) == pytest.approx(0, abs=1e-12)
    assert scoring.js_divergence_normal(0, 1, 100, 1) == pytest.approx(np.log(2), abs=1e-9)
    assert scoring.js_divergence_normal(0, 1, 100, 1, base=2) == pytest.approx(1, abs=1e-9)
    with pytest.raises(ScoringError, match="sd2"):
        scoring.js_divergence_normal(0, 1, 0, 0)


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error or a documented NaN
# ---------------------------------------------------------------------------------------------


def test_misaligned_index_raises():
    preds, target, eras = make_data(seed=9)
    shifted = target.copy()
    shifted.index = [f"other{i}" for i in range(len(target))]
    with pytest.raises(ScoringError, match="share no id"):
        scoring.per_era_numerai_corr(preds, shifted, pd.concat([eras, pd.Series(eras.to_numpy(), index=shifted.index)]))
    with pytest.raises(ScoringError, match="share no id"):
        scoring.numerai_corr(preds, shifted)
    with pytest.raises(ScoringError, match="eras has no era for"):
        scoring.per_era_numerai_corr(preds, target, eras.iloc[10:])
    # a positional (RangeIndex) target next to id-indexed predictions
    with pytest.raises(ScoringError, match="share no id"):
        scoring.numerai_corr(preds, target.reset_index(drop=True))


def test_too_many_ids_dropped_raises():
    preds, target, eras = make_data(seed=10)
    sparse = target.copy()
    sparse.iloc[: len(sparse) // 2] = np.nan  # half the ids of the first eras lose their target
    with pytest.raises(ScoringError, match="keep fewer than 80%"):
        scoring.per_era_numerai_corr(preds, sparse, eras)
    # opt out: every era scored on the ids that kept their target, as the pandas recipe does
    got = scoring.per_era_numerai_corr(preds, sparse, eras, max_filtered_ratio=None)
    want = ref_per_era(ref_numerai_corr_one, preds, eras, sparse)
    assert list(got.index) == list(want.index) and got.notna().all().all()
    np.testing.assert_allclose(got.to_numpy(), want.loc[got.index, got.columns].to_numpy(), rtol=0, atol=TOL)
    with pytest.raises(ScoringError, match="max_filtered_ratio must be in"):
        scoring.per_era_numerai_corr(preds, target, eras, max_filtered_ratio=1.5)


def test_nan_and_inf_predictions_raise():
    preds, target, eras = make_data(seed=11)
    bad = preds.copy()
    bad.iloc[3, 2] = np.nan
    with pytest.raises(ScoringError, match=r"NaN or infinite values, in columns \['p2'\]"):
        scoring.per_era_numerai_corr(bad, target, eras)
    bad.iloc[3, 2] = np.inf
    with pytest.raises(ScoringError, match="p2"):
        scoring.numerai_corr(bad, target)


def test_constant_column_raises_or_is_nan():
    preds, target, eras = make_data(seed=12)
    preds["flat"] = 0.5
    with pytest.raises(ScoringError, match="flat.*constant"):
        scoring.per_era_numerai_corr(preds, target, eras)
    got = scoring.per_era_numerai_corr(preds, target, eras, on_constant="nan")
    assert got["flat"].isna().all() and got.drop(columns="flat").notna().all().all()
    with pytest.raises(ScoringError, match="on_constant"):
        scoring.numerai_corr(preds, target, on_constant="ignore")


def test_constant_within_one_era_is_nan_there():
    preds, target, eras = make_data(seed=13, shuffle=False)
    preds.loc[eras == "0002", "p0"] = 0.25
    got = scoring.per_era_numerai_corr(preds, target, eras)
    assert np.isnan(got.loc["0002", "p0"])
    assert got.drop(index="0002").notna().all().all() and got.loc["0002"].drop("p0").notna().all()


def test_era_with_one_row_and_constant_target_are_nan():
    preds, target, eras = make_data(seed=14)
    eras = eras.copy()
    eras.iloc[0] = "9999"  # an era of one row
    target = target.copy()
    target[eras == "0003"] = 0.5  # a constant target in era 0003
    got = scoring.per_era_numerai_corr(preds, target, eras)
    assert got.loc["9999"].isna().all() and got.loc["0003"].isna().all()
    assert got.drop(index=["9999", "0003"]).notna().all().all()
    summary = scoring.score_summary(got)
    assert (summary["n_eras"] == len(got) - 2).all()  # NaN eras are skipped, not zeroed


def test_era_without_target_is_nan_with_warning():
    preds, target, eras = make_data(seed=15)
    target = target.copy()
    target[eras == "0006"] = np.nan
    with pytest.warns(RuntimeWarning, match="no target"):
        got = scoring.per_era_numerai_corr(preds, target, eras)
    assert got.loc["0006"].isna().all() and got.drop(index="0006").notna().all().all()


def test_duplicate_ids_and_wrong_types_raise():
    preds, target, eras = make_data(seed=16)
    with pytest.raises(ScoringError, match="predictions has 1 duplicate ids"):
        scoring.numerai_corr(pd.concat([preds, preds.iloc[:1]]), target)
    with pytest.raises(ScoringError, match="targets has 1 duplicate"):
        scoring.numerai_corr(preds, pd.concat([target, target.iloc[:1]]))
    with pytest.raises(ScoringError, match="numeric; not numeric: \\['era'\\]"):
        scoring.numerai_corr(preds.assign(era=eras), target)
    with pytest.raises(ScoringError, match="must be a pandas DataFrame"):
        scoring.numerai_corr(preds.to_numpy(), target)
    with pytest.raises(ScoringError, match="targets must be numeric"):
        scoring.numerai_corr(preds, target.astype(str))


def test_inputs_are_not_modified():
    preds, target, eras = make_data(seed=17)
    before = (preds.copy(), target.copy(), eras.copy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scoring.per_era_numerai_corr(preds, target, eras)
        scoring.numerai_corr(preds, target)
    pd.testing.assert_frame_equal(preds, before[0])
    pd.testing.assert_series_equal(target, before[1])
    pd.testing.assert_series_equal(eras, before[2])


def test_float64_values_equal_in_float32_are_still_ordered():
    # distinct float64 values that round to the same float32 must keep their true order
    base = np.float64(0.3)
    values = base + np.array([5e-17, -5e-17, 0.0, 1e-16, -1e-16, 0.7, -0.2, 0.0])
    assert len(set(values.astype(np.float32))) < len(set(values))
    frame = pd.DataFrame({"a": values, "b": values[::-1]})
    got = _gauss_rows(frame.to_numpy(), None)
    for j, col in enumerate(frame.columns):
        np.testing.assert_allclose(got[j], ref_gauss(frame[col]), rtol=0, atol=1e-15)


def test_float64_collisions_in_float32_random():
    # many float64 values sharing a float32 key, some exactly tied, in several columns at once
    rng = np.random.default_rng(21)
    coarse = rng.integers(0, 40, (400, 70)).astype(np.float32).astype(np.float64) / 7
    fine = coarse + rng.integers(-3, 4, coarse.shape) * 1e-12
    got = _gauss_rows(fine, 1.5)
    frame = pd.DataFrame(fine)
    for j in (0, 1, 33, 64, 69):
        np.testing.assert_allclose(got[j], ref_pow(ref_gauss(frame[j])), rtol=0, atol=1e-12)


def test_feature_exposure_in_blocks_matches_one_pass(monkeypatch):
    # the blockwise accumulation (used for millions of rows) equals the one-pass correlation
    preds, _, _ = make_data(seed=18, k=3)
    rng = np.random.default_rng(18)
    features = pd.DataFrame(rng.integers(0, 5, (len(preds), 7)).astype(np.int8), index=preds.index)
    features.columns = [f"f{j}" for j in range(7)]
    features["f6"] = 2  # constant: NaN
    want = pd.DataFrame({c: features.astype(float).corrwith(preds[c]) for c in preds.columns})
    monkeypatch.setattr(scoring_features, "_EXPOSURE_BLOCK_VALUES", 7 * 50)  # blocks of 50 rows
    got = scoring.feature_exposure(preds, features)
    np.testing.assert_allclose(got.to_numpy()[:6], want.to_numpy()[:6], rtol=0, atol=TOL)
    assert got.loc["f6"].isna().all()
    holed = features.astype(float)
    holed.iloc[3, 2] = np.nan
    with pytest.raises(ScoringError, match=r"features has NaN or infinite values in columns \['f2'\]"):
        scoring.feature_exposure(preds, holed)
    # or a NaN counts as a given value
    filled = holed.fillna({"f2": 2.0})
    pd.testing.assert_frame_equal(scoring.feature_exposure(preds, holed, nan_fill=2.0),
                                  scoring.feature_exposure(preds, filled))
