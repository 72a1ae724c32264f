"""Forecasts: VARMAX test-set forecast versus actual with intervals, and the order search."""

from __future__ import annotations

import altair as alt
import streamlit as st

from mlflow_numerai.dashboard import queries
from mlflow_numerai.dashboard.app import common as ui

st.title("Forecasts")
uri = ui.require_store()
runs = ui.family_runs(uri, ("varmax",), "varmax", "No VARMAX runs yet")
# The order-search candidates are nested runs; the forecast lives on the parent.
parents = runs[runs["parent_run_id"].isna() | ~runs["parent_run_id"].isin(runs["run_id"])]
options = ui.run_options(parents if not parents.empty else runs)
label = st.selectbox("Run", list(options), key="fc_run")
run_id = options[label]

forecast = ui.artifact_frame(uri, "varmax_forecast", run_id)
if forecast.empty:
    st.caption(f"This run did not log `{queries.VARMAX_FORECAST_ARTIFACT}`.")
else:
    stats = queries.forecast_coverage(forecast)
    cols = st.columns(max(1, len(stats)))
    for col, (_, s) in zip(cols, stats.iterrows()):
        col.metric(f"{s['variable']} test RMSE", ui.fmt(s["rmse"]),
                   help=f"{s['coverage']:.0%} of actuals inside the interval")
    for variable, f in forecast.groupby("variable", sort=False):
        st.markdown(f"**{variable}**: forecast versus actual (test set)")
        base = alt.Chart(f).encode(x=alt.X("period:N", title="period", sort=None))
        band = base.mark_area(opacity=0.25, color="#1e88e5").encode(
            y=alt.Y("lower:Q", title=variable, scale=alt.Scale(zero=False)), y2="upper:Q"
        )
        fc = base.mark_line(color="#1e88e5", point=True).encode(
            y="forecast:Q", tooltip=["period", "forecast", "lower", "upper"]
        )
        act = base.mark_line(color="black", strokeDash=[4, 3], point=True).encode(
            y="actual:Q", tooltip=["period", "actual"]
        )
        st.altair_chart((band + fc + act).properties(height=280), width="stretch")
    st.table(ui.rounded(stats.set_index("variable")))

st.subheader("Order search")
search = ui.artifact_frame(uri, "varmax_order_search", run_id)
if search.empty:
    st.caption(f"This run did not log `{queries.VARMAX_ORDER_ARTIFACT}`.")
else:
    row = parents[parents["run_id"] == run_id] if not parents.empty else runs[runs["run_id"] == run_id]
    criterion = None
    for col in ("params.config.criterion", "params.criterion"):  # the entry point logs `config.*`
        if criterion is None and not row.empty and col in row and isinstance(row[col].iloc[0], str):
            criterion = row[col].iloc[0]
    if not (isinstance(criterion, str) and criterion in search):
        criterion = "aic" if "aic" in search else None
    if criterion is not None:
        win = search.loc[search[criterion].idxmin()]
        st.markdown(
            f"Best by **{criterion}**: p = {int(win['p'])}, q = {int(win['q'])} ({criterion} {win[criterion]:.2f})"
        )
        heat = alt.Chart(search).mark_rect().encode(
            x=alt.X("q:O"), y=alt.Y("p:O"),
            color=alt.Color(f"{criterion}:Q", scale=alt.Scale(scheme="blues", reverse=True)),
            tooltip=list(search.columns),
        )
        st.altair_chart(heat.properties(height=200, width=300))
    st.table(ui.rounded(search, 3))
