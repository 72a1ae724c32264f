"""Training: streaming Keras runs, loss and validation corr by epoch, loader throughput."""

from __future__ import annotations

import altair as alt
import streamlit as st

from mlflow_numerai.dashboard import queries
from mlflow_numerai.dashboard.app import common as ui

st.title("Training")
uri = ui.require_store()
runs = ui.family_runs(uri, ("keras_stream",), "keras_stream", "No streaming Keras runs yet")
options = ui.run_options(runs)
picked = st.multiselect("Runs", list(options), default=list(options)[:3], key="train_runs")
if not picked:
    st.caption("Pick at least one run.")
    st.stop()

ids = tuple(options[p] for p in picked)
history = ui.metric_history(uri, ids)
if history.empty:
    st.caption("The chosen runs have not logged per-epoch metrics yet.")
    st.stop()
label_of = {v: k for k, v in options.items()}
history = history.assign(run=history["run_id"].map(label_of))

summary = queries.training_summary(history)
summary.insert(0, "run", summary["run_id"].map(label_of))
best = summary.sort_values("best_val_corr_mean", ascending=False, na_position="last").iloc[0]
c = st.columns(3)
c[0].metric("Best val corr", ui.fmt(best["best_val_corr_mean"]),
            help="best epoch's per-era validation corr over the chosen runs")
c[1].metric("Best run", f"{best['run']} @ epoch {best['best_epoch']}")
throughput = summary["mean_rows_per_sec"]
c[2].metric("Loader throughput (rows/s)", f"{throughput.max():,.0f}" if throughput.notna().any() else "—",
            help="fastest run's mean over its epochs")
st.table(ui.rounded(summary.drop(columns=["run_id"]).set_index("run")))


def curve(keys: list[str], title: str):
    h = history[history["key"].isin(keys)]
    if h.empty:
        return None
    return alt.Chart(h).mark_line(point=True).encode(
        x=alt.X("step:Q", title="epoch"), y=alt.Y("value:Q", title=title, scale=alt.Scale(zero=False)),
        color=alt.Color("run:N", title=None), strokeDash=alt.StrokeDash("key:N", title=None),
        tooltip=["run", "key", "step", alt.Tooltip("value:Q", format=".5f")],
    ).properties(height=300)


left, right = st.columns(2)
panels = (
    (left, ["loss", "val_loss"], "loss (MSE)"),
    (right, ["val_corr_mean", "val_corr_sharpe"], "validation per-era corr"),
)
for col, keys, title in panels:
    col.markdown(f"**{title}**")
    chart = curve(keys, title)
    if chart is None:
        col.caption(f"Not logged: {', '.join(keys)}")
    else:
        col.altair_chart(chart, width="stretch")
st.markdown("**Loader throughput (rows/s) by epoch**")
chart = curve(["rows_per_sec"], "rows/s")
if chart is None:
    st.caption("Not logged: rows_per_sec")
else:
    st.altair_chart(chart, width="stretch")
