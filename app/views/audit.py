"""Cost audit: which inputs take the costliest paths, cost per class, cost against error, CSV export."""
from __future__ import annotations

import streamlit as st

import state
from drnet_core import audit, figures

settings = state.current_settings()
classes = settings.class_names
evaluated = state.limited_set(settings)

st.title("Cost audit")
st.caption(f"Executed multiply-adds per input on {evaluated.name} at tau {settings.tau:g}, "
           f"threshold {settings.threshold:g}.")

run = state.routed_run(settings)
table = audit.instance_table(run, classes, evaluated.indices)
table.insert(0, "position", range(len(table)))
low, high = float(table["mflops"].min()), float(table["mflops"].max())

f1, f2, f3 = st.columns([2, 1, 2])
chosen_classes = f1.multiselect("True class", list(classes), key="audit_classes", placeholder="all classes")
correctness = f2.radio("Answers", ["all", "correct", "incorrect"], horizontal=True,
                       key=state.bound("answers", "all", options=["all", "correct", "incorrect"]))
if high > low:
    kept = st.session_state.get("audit_range")
    if kept is not None and not (low <= kept[0] <= kept[1] <= high):
        st.session_state["audit_range"] = (low, high)  # the setting changed the costs: reset the range
    cost_range = f3.slider("Cost range (MFLOPs)", low, high, (low, high), step=max((high - low) / 200, 1e-6),
                           format="%.3f", key="audit_range")
else:
    f3.markdown(f"Every input costs **{low:.3f} MFLOPs** at this setting.")
    cost_range = (low, high)
state.publish("answers")
filtered = audit.filter_table(table, classes=chosen_classes, correctness=correctness, mflops_range=cost_range)

m1, m2, m3, m4 = st.columns(4)
m1.metric("Inputs shown", f"{len(filtered):,}", f"of {len(table):,}", delta_color="off")
m2.metric("Mean MFLOPs", f"{filtered['mflops'].mean():.3f}" if len(filtered) else "–")
m3.metric("Accuracy", f"{filtered['correct'].mean():.1%}" if len(filtered) else "–")
m4.metric("Distinct paths", f"{filtered['path_id'].nunique():,}")

st.subheader("Costliest inputs")
count = st.slider("How many", 4, 48, step=4, key=state.bound("top", 12, low=4, high=48))
state.publish("top")
top = audit.costliest(filtered, count)
if len(top):
    state.thumbnails([evaluated.images[p] for p in top["position"]],
                     [f"#{i} {t}→{p} · {f:.2f}" for i, t, p, f in zip(top["index"], top["true"], top["predicted"],
                                                                        top["mflops"])])
st.dataframe(top.drop(columns=["position"]), hide_index=True, key="costliest_table",
             column_config={"confidence": st.column_config.NumberColumn(format="percent"),
                            "mflops": st.column_config.NumberColumn("MFLOPs", format="%.3f"),
                            "active_params": st.column_config.NumberColumn("active params", format="%d")})

left, right = st.columns(2)
if len(filtered):
    left.plotly_chart(figures.cost_per_class_figure(audit.cost_per_class(filtered)), key="cost_per_class")
    right.plotly_chart(figures.cost_vs_error_figure(filtered), key="cost_vs_error")
    right.dataframe(audit.cost_by_correctness(filtered), hide_index=True, key="correctness_table",
                    column_config={"mean MFLOPs": st.column_config.NumberColumn(format="%.3f"),
                                   "median MFLOPs": st.column_config.NumberColumn(format="%.3f")})
else:
    st.info("No input matches these filters.")

st.download_button("Download per-instance results (CSV)", audit.to_csv(filtered), file_name="drnet_audit.csv",
                   mime="text/csv", key="download_csv", icon=":material/download:")
