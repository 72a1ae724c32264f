"""A Numerai-like synthetic data set (v5 layout) with planted, drifting signal and burn eras.

How one era is made (`n` rows, `F` features):
- Features come from feature groups: ``x_f = l_f * u_group(f) + sqrt(1 - l_f**2) * e_f`` with
  a standard normal group factor ``u`` and unit-variance uniform ``e``, then cut into five equal
  bins within the era (int8 0..4).
- A subset of features carries signal. For each target name (nomi, janet, george) the noiseless
  signal is ``s = W[era] @ b`` on the centred bins ``b = (bin - 2) / sqrt(2)``, plus a small
  nonlinear term ``V @ (b**2 - 1)``. ``W[era]`` drifts from era to era (an AR(1) around the base
  weights); janet and george share most of nomi's weights.
- Burn eras (about 20 %) are a different regime: the part of the signal that holds most of the
  weight is reversed, the nonlinear term is larger and the usual co-movement of features within
  a group breaks down (loadings shrink). A model fit to the average burns there, and its inputs
  spread into directions the training eras pin down poorly, so an ensemble disagrees more.
- 20-day targets: ``s + noise``; 60-day targets use weights averaged over neighbouring eras
  (smoother) and noise correlated with the 20-day noise. Each target is cut into the buckets
  {0, .25, .5, .75, 1} with shares 5/20/50/20/5 % within the era.
- `meta_model.parquet` (validation eras): mostly the benchmark's signal, some of the era's own
  and noise, so that it correlates with the benchmark models and the target as on Numerai.
- `nan_percent`: that share of feature cells is written as null (int8 with nulls; pandas reads
  float), from a stream of its own.

Everything derives from the seed: a "plan" (signal features, weights, burn eras) from one random
stream and each era from its own stream, so the output is byte-identical for a seed and an era's
content does not depend on how eras are batched into row groups.

This module owns the generative model (`Plan`, `generate_era`, `planted_signal`) and
`generate_synthetic`; the parameters, column names and parquet writers are in
`mlflow_numerai.data.synthetic_layout` (re-exported here).
"""

from __future__ import annotations

import math
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from mlflow_numerai.data.files import DataError, atomic_directory
from mlflow_numerai.data.synthetic_layout import (
    AUX_TARGETS,
    BENCHMARK_COLUMNS,
    GENERATOR_VERSION,
    META_MODEL_COLUMN,
    TARGET_NAMES,
    TARGETS,
    Era,
    SplitWriter,
    SyntheticParams,
    era_label,
    feature_names,
    split_schema,
    write_benchmarks,
    write_json,
    write_meta_model,
)

# Re-exported: the synthetic set's public names, read from `data.synthetic`.
__all__ = [
    "AUX_TARGETS",
    "BENCHMARK_COLUMNS",
    "BUCKET_SHARES",
    "META_MODEL_COLUMN",
    "TARGETS",
    "Era",
    "Plan",
    "SyntheticParams",
    "equal_bins",
    "era_label",
    "feature_names",
    "generate_era",
    "generate_synthetic",
    "planted_signal",
    "shares_bins",
]

BUCKETS = np.array([0.0, 0.25, 0.5, 0.75, 1.0], dtype=np.float32)
BUCKET_SHARES = (0.05, 0.20, 0.50, 0.20, 0.05)
FEATURE_GROUPS = (
    "intelligence", "charisma", "strength", "dexterity", "constitution", "wisdom",
    "agility", "serenity", "sunshine", "rain", "midnight",
)  # fmt: skip
# The meta model: mostly the benchmark's (average-weight) signal, some of the era's own signal
# (the crowd finds a little of what the benchmark misses), plus noise: on Numerai it correlates
# ~0.8-0.9 with the benchmark models and a few percent with the target.
META_FROM_BENCHMARK, META_FROM_ERA, META_NOISE = 0.8, 0.4, 0.5

# Planted structure (tuned so a ridge fit on ~100k rows reaches a mean validation corr of a few
# percent, the noiseless signal clearly more, and burn eras are negative for the average model).
BURN_FRACTION = 0.2
REVERSED_WEIGHT_SHARE = 0.9  # share of the squared signal weight that flips in burn eras
DRIFT_SCALE = 0.35  # era-to-era weight drift, relative to the base weights
DRIFT_PERSISTENCE = 0.9  # AR(1) coefficient of the drift across eras
NONLINEAR = {False: 0.25, True: 0.6}  # weight of the nonlinear term: normal / burn eras
LOADING_RANGE = (0.15, 0.55)  # feature loadings on their group factor in normal eras
# Burn eras: the usual co-movement of features within a group breaks down (loadings shrink),
# so rows spread into directions the (mostly normal) training eras pin down poorly and
# models disagree more there.
BURN_LOADING_SCALE = 0.5
NOISE_SCALE = 10.0  # per-row noise sd relative to the unit-variance signal
NOISE_ERA_SPREAD = 0.25  # log-sd of the era-level noise multiplier
NOISE_TARGET_SHARED = 0.6  # share of noise variance common to nomi, janet, george
NOISE_60_FROM_20 = 0.6  # correlation of 60-day noise with 20-day noise
AUX_NAN_SHARE = 0.005  # random missing values in auxiliary targets



def equal_bins(values: np.ndarray, n_bins: int = 5) -> np.ndarray:
    """Cut each row of `values` (variables x observations) into `n_bins` equal-count bins (int8)."""
    return shares_bins(values, np.full(n_bins, 1.0 / n_bins))


def shares_bins(values: np.ndarray, shares: np.ndarray | tuple) -> np.ndarray:
    """Bin index (int8) of each value in its row, bins holding exactly the given shares of the
    row (rounded to whole rows); ties are split by position."""
    n = values.shape[1]
    cuts = np.clip(np.rint(np.cumsum(shares)[:-1] * n).astype(int), 1, n - 1)
    # Edges from a plain sort: numpy's SIMD sort beats an argsort or a multi-kth partition here.
    edges = np.sort(values, axis=1)[:, cuts]
    out = np.zeros(values.shape, dtype=np.int8)
    wrong = np.zeros(values.shape[0], dtype=bool)
    for k, cut in enumerate(cuts):
        above = values >= edges[:, k : k + 1]
        out += above
        wrong |= np.count_nonzero(above, axis=1) != n - cut
    sizes = np.diff(np.concatenate([[0], cuts, [n]]))
    for row in np.flatnonzero(wrong):  # a tie across an edge (rare): rank, ties by position
        out[row, np.argsort(values[row], kind="stable")] = np.repeat(np.arange(len(sizes), dtype=np.int8), sizes)
    return out


def centred(bins: np.ndarray) -> np.ndarray:
    """Feature bins 0..4 as zero-mean, unit-variance floats (exact for equal bins)."""
    return (bins.astype(np.float32) - 2.0) / np.float32(math.sqrt(2.0))


def _ar1(rng: np.random.Generator, n: int, k: int, phi: float) -> np.ndarray:
    """`n` steps of `k` independent stationary unit-variance AR(1) series."""
    out = np.empty((n, k))
    out[0] = rng.standard_normal(k)
    shocks = rng.standard_normal((n, k)) * math.sqrt(1 - phi**2)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + shocks[t]
    return out


def _smooth(weights: np.ndarray, width: int = 5) -> np.ndarray:
    """Centred moving average over eras (axis 0), shrinking at the ends."""
    kernel = np.ones(width)
    num = np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="same"), 0, weights)
    den = np.convolve(np.ones(weights.shape[0]), kernel, mode="same")[:, None]
    return num / den


class Plan:
    """Everything about a data set that is not per-row noise: drawn once from the seed."""

    def __init__(self, params: SyntheticParams):
        self.params = params
        p = params
        rng = np.random.default_rng(np.random.SeedSequence([p.seed, 0]))
        F = p.n_features
        self.features = feature_names(F)
        n_groups = min(len(FEATURE_GROUPS), max(1, F // 4))
        self.group = rng.integers(0, n_groups, size=F)
        self.group_names = FEATURE_GROUPS[:n_groups]
        self.loading = rng.uniform(*LOADING_RANGE, size=F)
        self.burn_loading = self.loading * BURN_LOADING_SCALE

        n_signal = max(2, round(F / 10))
        self.signal = np.sort(rng.choice(F, size=n_signal, replace=False))
        base = rng.standard_normal(n_signal)
        # janet and george share most of nomi's weights.
        self.base_weights = {
            "nomi": base,
            "janet": 0.8 * base + 0.6 * rng.standard_normal(n_signal),
            "george": 0.6 * base + 0.8 * rng.standard_normal(n_signal),
        }
        self.nonlinear_weights = {name: rng.standard_normal(n_signal) for name in TARGET_NAMES}
        # The reversed part: the largest nomi weights holding REVERSED_WEIGHT_SHARE of the mass.
        order = np.argsort(-np.abs(base))
        mass = np.cumsum(base[order] ** 2) / np.sum(base**2)
        n_rev = int(np.searchsorted(mass, REVERSED_WEIGHT_SHARE) + 1)
        self.reversed = np.zeros(n_signal, dtype=bool)
        self.reversed[order[: min(n_rev, n_signal)]] = True

        # Burn eras: a fixed share of train and of validation eras; the live era by chance.
        burn = np.zeros(p.n_eras, dtype=bool)
        for start, count in ((0, p.eras_train), (p.eras_train, p.eras_validation)):
            k = round(BURN_FRACTION * count)
            burn[start + rng.choice(count, size=k, replace=False)] = True
        burn[-1] = rng.random() < BURN_FRACTION
        self.burn = burn

        drift = _ar1(rng, p.n_eras, n_signal * len(TARGET_NAMES), DRIFT_PERSISTENCE)
        self.weights_20: dict[str, np.ndarray] = {}
        self.weights_60: dict[str, np.ndarray] = {}
        sign = np.where(burn[:, None] & self.reversed[None, :], -1.0, 1.0)
        for i, name in enumerate(TARGET_NAMES):
            w0 = self.base_weights[name]
            scale = DRIFT_SCALE * np.sqrt(np.mean(w0**2))
            w = (w0[None, :] + scale * drift[:, i * n_signal : (i + 1) * n_signal]) * sign
            self.weights_20[name] = w
            self.weights_60[name] = _smooth(w)
        self.noise_scale = NOISE_SCALE * np.exp(NOISE_ERA_SPREAD * rng.standard_normal(p.n_eras))
        self.id_offset = int(rng.integers(0, 2**60, dtype=np.uint64))

        # Feature sets: `small` holds about half the signal features, `medium` all of them.
        n_small = int(min(max(3, round(F / 6)), 42, F))
        n_medium = int(max(n_small, round(F * 0.3), min(F, n_signal + n_small)))
        small_signal = rng.choice(self.signal, size=min(n_signal // 2 + 1, n_small), replace=False)
        rest = np.setdiff1d(np.arange(F), small_signal)
        small = np.concatenate([small_signal, rng.choice(rest, size=n_small - small_signal.size, replace=False)])
        rest = np.setdiff1d(np.arange(F), np.union1d(small, self.signal))
        medium = np.union1d(small, self.signal)
        medium = np.concatenate([medium, rng.choice(rest, size=max(0, n_medium - medium.size), replace=False)])
        self.feature_sets = {
            "small": [self.features[i] for i in np.sort(small)],
            "medium": [self.features[i] for i in np.sort(medium)],
            "all": list(self.features),
        }
        for g, gname in enumerate(self.group_names):
            self.feature_sets[gname] = [self.features[i] for i in np.flatnonzero(self.group == g)]

        # Benchmark models: the average (train-era) weights, as a decent model would learn.
        train = slice(0, p.eras_train)
        self.mean_weights_20 = self.weights_20["nomi"][train].mean(axis=0)
        self.mean_weights_60 = self.weights_60["nomi"][train].mean(axis=0)
        small_idx = np.searchsorted(self.features, self.feature_sets["small"])
        self.signal_in_small = np.isin(self.signal, small_idx)

    @cached_property
    def signal_features(self) -> list[str]:
        return [self.features[i] for i in self.signal]

    def split_of(self, era_index: int) -> str:
        p = self.params
        if era_index < p.eras_train:
            return "train"
        return "validation" if era_index < p.eras_train + p.eras_validation else "live"

    def era_rng(self, era_index: int) -> np.random.Generator:
        """The random stream of one era (independent of batching)."""
        return np.random.default_rng(np.random.SeedSequence([self.params.seed, 1, era_index]))

    def ids(self, era_index: int, n: int) -> list[str]:
        """Unique row ids: an odd-multiplier bijection of the global row number mod 2**60."""
        rows = np.arange(era_index * n, (era_index + 1) * n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            codes = (rows * np.uint64(0x9E3779B97F4A7C15) + np.uint64(self.id_offset)) & np.uint64(2**60 - 1)
        return [f"n{c:015x}" for c in codes.tolist()]

    def noiseless_signal(self, signal_bins: np.ndarray, era_index: int, name: str = "nomi") -> np.ndarray:
        """The planted 20-day signal of target `name` for bins of the signal features (k x n)."""
        b = centred(signal_bins)
        return self._signal_20(b, b * b - 1.0, era_index, name)

    def noiseless_signal_60(self, signal_bins: np.ndarray, era_index: int, name: str = "nomi") -> np.ndarray:
        """The planted 60-day signal (smoothed weights, linear only)."""
        return self._signal_60(centred(signal_bins), era_index, name)

    def _signal_20(self, b: np.ndarray, b2: np.ndarray, era_index: int, name: str) -> np.ndarray:
        """The 20-day signal from centred bins `b` and `b2 = b**2 - 1` (zero-mean)."""
        w = self.weights_20[name][era_index]
        linear = (w.astype(np.float32) @ b) / np.float32(np.linalg.norm(w))
        v = self.nonlinear_weights[name]
        nonlinear = (v.astype(np.float32) @ b2) / np.float32(np.linalg.norm(v) * math.sqrt(0.7))
        s = linear + np.float32(NONLINEAR[bool(self.burn[era_index])]) * nonlinear
        return (s - s.mean()) / (s.std() + 1e-12)

    def _signal_60(self, b: np.ndarray, era_index: int, name: str) -> np.ndarray:
        w = self.weights_60[name][era_index]
        s = (w.astype(np.float32) @ b) / np.float32(np.linalg.norm(w) + 1e-12)
        return (s - s.mean()) / (s.std() + 1e-12)


def _rank01(values: np.ndarray) -> np.ndarray:
    """Ranks scaled into (0, 1): (rank - 0.5) / n."""
    order = np.argsort(values, kind="stable")
    out = np.empty(values.size, dtype=np.float32)
    out[order] = (np.arange(values.size) + 0.5) / values.size
    return out


def generate_era(plan: Plan, era_index: int) -> Era:
    """Generate one era of the plan (features, targets, benchmark predictions)."""
    p = plan.params
    n, F = p.rows_per_era, p.n_features
    rng = plan.era_rng(era_index)
    burn = bool(plan.burn[era_index])
    split = plan.split_of(era_index)

    factors = rng.standard_normal((len(plan.group_names), n), dtype=np.float32)
    loading = (plan.burn_loading if burn else plan.loading).astype(np.float32)[:, None]
    # Idiosyncratic noise is uniform (unit variance): 4x cheaper to draw than normal, and only
    # ranks survive the binning anyway.
    x = rng.random((F, n), dtype=np.float32)
    x -= np.float32(0.5)
    x *= np.float32(math.sqrt(12.0)) * np.sqrt(1.0 - loading**2)
    common = factors[plan.group]
    common *= loading
    x += common
    del common
    bins = equal_bins(x)
    del x

    sig = bins[plan.signal]
    b = centred(sig)
    b2 = b * b - 1.0
    shared20 = rng.standard_normal(n)
    shared60 = rng.standard_normal(n)
    targets: dict[str, np.ndarray] = {}
    a, c = math.sqrt(NOISE_TARGET_SHARED), math.sqrt(1 - NOISE_TARGET_SHARED)
    r, q = NOISE_60_FROM_20, math.sqrt(1 - NOISE_60_FROM_20**2)
    for name in TARGET_NAMES:
        noise20 = a * shared20 + c * rng.standard_normal(n)
        noise60 = r * noise20 + q * (a * shared60 + c * rng.standard_normal(n))
        y20 = plan._signal_20(b, b2, era_index, name) + plan.noise_scale[era_index] * noise20
        y60 = plan._signal_60(b, era_index, name) + plan.noise_scale[era_index] * noise60
        targets[f"target_{name}_20"] = BUCKETS[shares_bins(y20[None, :], BUCKET_SHARES)[0]]
        targets[f"target_{name}_60"] = BUCKETS[shares_bins(y60[None, :], BUCKET_SHARES)[0]]

    # Missing values: a few random rows of auxiliary targets; 60-day targets of the last
    # validation eras are not resolved yet (as on Numerai). `target` is never missing.
    last_val = p.eras_train + p.eras_validation - 1
    unresolved = split == "validation" and last_val - era_index < min(2, p.eras_validation // 4)
    for col in AUX_TARGETS:
        if col == "target_nomi_20":
            continue
        mask = rng.random(n) < AUX_NAN_SHARE
        if unresolved and col.endswith("_60"):
            mask[:] = True
        targets[col] = np.where(mask, np.float32(np.nan), targets[col]).astype(np.float32)
    if split == "live":
        targets = {col: np.full(n, np.nan, dtype=np.float32) for col in AUX_TARGETS}
    targets["target"] = targets["target_nomi_20"]

    benchmarks: dict[str, np.ndarray] = {}
    if split != "train":
        w20, w60 = plan.mean_weights_20, plan.mean_weights_60
        small_w = np.where(plan.signal_in_small, w20, 0.0)
        for col, w, noise in (
            ("bench_small_nomi20", small_w, 0.5),
            ("bench_all_nomi20", w20, 0.5),
            ("bench_all_nomi60", w60, 0.5),
        ):
            raw = (w.astype(np.float32) @ b) / np.float32(np.linalg.norm(w) + 1e-12)
            benchmarks[col] = _rank01(raw + noise * rng.standard_normal(n))

    meta_model = None
    if split == "validation":  # drawn last: the other columns are those of generator 3
        w20 = plan.mean_weights_20
        bench_signal = (w20.astype(np.float32) @ b) / np.float32(np.linalg.norm(w20) + 1e-12)
        era_signal = plan._signal_20(b, b2, era_index, "nomi")
        raw = META_FROM_BENCHMARK * bench_signal + META_FROM_ERA * era_signal + META_NOISE * rng.standard_normal(n)
        meta_model = _rank01(raw)
    nan_mask = None
    if p.nan_percent:  # its own stream: the data are those without NaN, with holes
        nan_rng = np.random.default_rng(np.random.SeedSequence([p.seed, 2, era_index]))
        nan_mask = nan_rng.random((F, n)) < p.nan_percent / 100.0

    return Era(plan.ids(era_index, n), era_label(era_index), split, bins, targets, benchmarks, meta_model, nan_mask)



def generate_synthetic(
    out_dir: str | os.PathLike,
    *,
    eras_train: int = SyntheticParams.eras_train,
    eras_validation: int = SyntheticParams.eras_validation,
    rows_per_era: int = SyntheticParams.rows_per_era,
    n_features: int = SyntheticParams.n_features,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    nan_percent: int = 0,
) -> Path:
    """Write a synthetic Numerai data directory (v5 layout + `metadata.json`) and return its path.

    Deterministic: the same parameters give byte-identical files. Written era by era into a
    temporary sibling directory that is renamed into place at the end; an existing non-empty
    `out_dir` is replaced only with `overwrite=True`.
    """
    params = SyntheticParams(eras_train, eras_validation, rows_per_era, n_features, seed, nan_percent)
    plan = Plan(params)
    schema = split_schema(plan.features)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        from tqdm.auto import tqdm

        writers = {
            split: SplitWriter(tmp / f"{split}.parquet", schema, n_features, rows_per_era)
            for split in ("train", "validation", "live")
        }
        bench: dict[str, list] = {"validation": [], "live": []}
        meta: list = []
        try:
            for era_index in tqdm(range(params.n_eras), desc="synthetic eras", unit="era", disable=not progress):
                era = generate_era(plan, era_index)
                if era.split != "train":
                    bench[era.split].append((era.ids, era.label, era.benchmarks))
                if era.meta_model is not None:
                    meta.append((era.ids, era.label, era.meta_model))
                writers[era.split].add(era)
        except BaseException:
            for writer in writers.values():
                writer.close(flush=False)
            raise
        for writer in writers.values():
            writer.close()
        for split, eras in bench.items():
            write_benchmarks(tmp / f"{split}_benchmark_models.parquet", eras)
        write_meta_model(tmp / "meta_model.parquet", meta)
        write_json(tmp / "features.json", {"feature_sets": plan.feature_sets, "targets": list(TARGETS)})
        write_json(tmp / "metadata.json", _metadata(plan))
    return Path(out_dir).expanduser().absolute()


def _metadata(plan: Plan) -> dict:
    p = plan.params
    labels = [era_label(i) for i in range(p.n_eras)]
    train, val = labels[: p.eras_train], labels[p.eras_train : -1]
    return {
        "data_version": p.data_version,
        "generator": "mlflow_numerai.synthetic",
        "generator_version": GENERATOR_VERSION,
        "parameters": p.to_dict(),
        "rows": {
            "train": p.eras_train * p.rows_per_era,
            "validation": p.eras_validation * p.rows_per_era,
            "live": p.rows_per_era,
        },
        "eras": {"train": [train[0], train[-1]], "validation": [val[0], val[-1]], "live": labels[-1]},
        "targets": list(TARGETS),
        "benchmark_models": list(BENCHMARK_COLUMNS),
        "meta_model": META_MODEL_COLUMN,
        "planted": {
            "signal_features": plan.signal_features,
            "burn_eras": [labels[i] for i in np.flatnonzero(plan.burn)],
            "burn_share": {
                "train": float(plan.burn[: p.eras_train].mean()),
                "validation": float(plan.burn[p.eras_train : -1].mean()),
            },
        },
    }


def planted_signal(frame: pd.DataFrame, params: SyntheticParams, target: str = "target") -> pd.Series:
    """The generator's noiseless signal for the rows of `frame` (needs `era` and the signal
    features), for a 20-day target ("target" or "target_<name>_20") or a 60-day one."""
    plan = Plan(params)
    name, horizon = "nomi", 20
    if target != "target":
        parts = target.split("_")
        if len(parts) != 3 or parts[1] not in TARGET_NAMES or parts[2] not in ("20", "60"):
            raise DataError(f"unknown target {target!r}; choose one of {list(TARGETS)}")
        name, horizon = parts[1], int(parts[2])
    missing = [c for c in ["era", *plan.signal_features] if c not in frame.columns]
    if missing:
        raise DataError(f"frame lacks column(s) {missing[:10]}")
    out = pd.Series(np.nan, index=frame.index, dtype=np.float64, name=f"planted_{target}")
    for era, rows in frame.groupby("era", sort=False).groups.items():
        era_index = int(era) - 1
        bins = frame.loc[rows, plan.signal_features].to_numpy(dtype=np.int8).T
        fn = plan.noiseless_signal if horizon == 20 else plan.noiseless_signal_60
        out.loc[rows] = fn(bins, era_index, name)
    return out
