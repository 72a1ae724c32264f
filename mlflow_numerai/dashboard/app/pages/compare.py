"""Compare: any runs of any family side by side on per-era corr, cumulative corr and metrics."""

from __future__ import annotations

import altair as alt
import streamlit as st

from mlflow_numerai.dashboard import queries
from mlflow_numerai.dashboard.app import common as ui

st.title("Compare")
uri = ui.require_store()
runs = ui.runs(uri)
if runs.empty:
    ui.empty_state("No training runs yet", "any", uri)
    st.stop()

labels = [f"{fam} · {lab}" for fam, lab in zip(runs["family"], queries.run_label(runs))]
options = dict(zip(labels, runs["run_id"]))
families = sorted(runs["family"].dropna().unique())
keep = st.multiselect("Families", families, default=families, key="cmp_families")
choices = [lab for lab, fam in zip(labels, runs["family"]) if fam in keep]
# Default: the three best top-level runs by the chosen diagnostic (the evaluator's corr mean first).
sortable = [(label, key) for label, key, _ in queries.DIAGNOSTIC_TILES if f"metrics.{key}" in runs]
sort_label = st.selectbox("Rank runs by", [label for label, _ in sortable], key="cmp_sort") if sortable else None
ranked = runs[runs["family"].isin(keep) & runs["parent_run_id"].isna()]
if sort_label is not None:
    key = f"metrics.{dict(sortable)[sort_label]}"
    ascending = dict(sortable)[sort_label] in queries.LOWER_IS_BETTER
    ranked = ranked.dropna(subset=[key]).sort_values(key, ascending=ascending)
label_of = dict(zip(runs["run_id"], labels))
default = [label_of[r] for r in ranked["run_id"][:3]]
picked = st.multiselect("Runs", choices, default=default, key="cmp_runs")
if not picked:
    st.caption("Pick runs to compare.")
    st.stop()
ids = tuple(options[p] for p in picked)
name_of = {options[p]: p.split(" · ", 1)[1] for p in picked}

per_era = ui.per_era(uri, ids)
if per_era.empty:
    st.caption(f"None of the chosen runs logged `{queries.PER_ERA_CORR_ARTIFACT}` (the `numerai` evaluator's output).")
else:
    per_era = per_era.assign(run=per_era["run_id"].map(name_of))
    stats = queries.era_stats(per_era)
    stats.insert(0, "run", stats["run_id"].map(name_of))
    cols = st.columns(len(stats))
    for col, (_, s) in zip(cols, stats.iterrows()):
        col.metric(s["run"], ui.fmt(s["corr_mean"]), help=f"per-era corr mean; Sharpe {ui.fmt(s['sharpe'], 3)}")
    left, right = st.columns(2)
    left.markdown("**Per-era corr**")
    left.altair_chart(
        alt.Chart(per_era).mark_line(point=True).encode(
            x=alt.X("era:N", title="era"), y=alt.Y("corr:Q", title="corr"), color=alt.Color("run:N", title=None),
            tooltip=["run", "era", alt.Tooltip("corr:Q", format=".4f")],
        ).properties(height=320),
        width="stretch",
    )
    right.markdown("**Cumulative corr**")
    right.altair_chart(
        alt.Chart(per_era).mark_line().encode(
            x=alt.X("era:N", title="era"), y=alt.Y("cumulative_corr:Q", title="cumulative corr"),
            color=alt.Color("run:N", title=None),
            tooltip=["run", "era", alt.Tooltip("cumulative_corr:Q", format=".4f")],
        ).properties(height=320),
        width="stretch",
    )
    st.markdown("**From the per-era corr**")
    st.table(ui.rounded(stats.drop(columns=["run_id"]).set_index("run")))

st.markdown("**Logged metrics**" + (f" (runs ranked by {sort_label})" if sort_label else ""))
order = [r for r in ranked["run_id"] if r in ids] + [r for r in ids if r not in set(ranked["run_id"])]
table = queries.compare_table(runs, order)
st.table(ui.rounded(table.dropna(how="all")))

# Studies: each trial's parameters against the objective.
trials = queries.study_trials(runs)
if not trials.empty:
    st.markdown("**Studies: trial parameters vs objective**")
    name = st.selectbox("Study", sorted(trials["study"].unique()), key="cmp_study")
    sel = trials[trials["study"] == name].dropna(axis=1, how="all")
    param_cols = [c for c in sel.columns if c not in ("study", "trial", "run_id", "objective")]
    chart_cols = st.columns(max(1, len(param_cols)))
    for col, param in zip(chart_cols, param_cols):
        col.altair_chart(
            alt.Chart(sel).mark_circle(size=60).encode(
                x=alt.X(f"{param}:{'Q' if sel[param].dtype.kind in 'fi' else 'N'}", title=param),
                y=alt.Y("objective:Q", title="numerai_corr_mean"),
                tooltip=["trial", param, alt.Tooltip("objective:Q", format=".4f")],
            ).properties(height=260),
            width="stretch",
        )
    st.table(ui.rounded(sel.drop(columns=["study", "run_id"]).set_index("trial")))
