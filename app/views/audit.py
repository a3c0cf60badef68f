"""Cost audit: which inputs take the costliest paths, cost per class, cost against error, CSV export."""
from __future__ import annotations

import streamlit as st

import state
from drnet_core import audit, figures

settings = state.current_settings()
classes = settings.class_names
evaluated = state.limited_set(settings)

st.title("Cost audit")
st.caption(f"Executed multiply-adds and estimated time per input on {evaluated.name} at tau {settings.tau:g}, "
           f"threshold {settings.threshold:g}.")

run = state.routed_run(settings)
times = state.time_table(settings.checkpoint_path, settings.checkpoint_sha, settings.dataset_name)
table = audit.instance_table(run, classes, evaluated.indices, time_table=times)
table.insert(0, "position", range(len(table)))
low, high = float(table["mflops"].min()), float(table["mflops"].max())

# Every filter is mirrored into the URL. A multiselect holds a list and a range slider a pair, which the
# URL helpers do not parse, so they travel as text: class positions "3,8", and the range's two ends.
class_text = st.session_state[state.bound("true_classes", "")]
if "audit_classes" not in st.session_state:
    positions = [int(part) for part in class_text.split(",") if part.strip().isdigit()]
    st.session_state["audit_classes"] = [classes[p] for p in sorted(set(positions)) if p < len(classes)]
f1, f2, f3 = st.columns(3)  # the answers' three choices on one line
chosen_classes = f1.multiselect("True class", list(classes), key="audit_classes", placeholder="all classes")
st.session_state["true_classes"] = ",".join(str(classes.index(name)) for name in chosen_classes)
correctness = f2.radio("Answers", ["all", "correct", "incorrect"], horizontal=True,
                       key=state.bound("answers", "all", options=["all", "correct", "incorrect"]))
if high > low:
    if "audit_range" not in st.session_state:
        start = st.session_state[state.bound("mflops_min", low, low=low, high=high)]
        end = st.session_state[state.bound("mflops_max", high, low=low, high=high)]
        st.session_state["audit_range"] = (min(start, end), max(start, end))
    kept = st.session_state["audit_range"]
    if not (low <= kept[0] <= kept[1] <= high):
        st.session_state["audit_range"] = (low, high)  # the setting changed the costs: reset the range
    cost_range = f3.slider("Cost range (MFLOPs)", low, high, step=max((high - low) / 200, 1e-6),
                           format="%.3f", key="audit_range")
    st.session_state["mflops_min"], st.session_state["mflops_max"] = (float(end) for end in cost_range)
    state.publish("mflops_min", "mflops_max")
else:
    f3.markdown(f"Every input costs **{low:.3f} MFLOPs** at this setting.")
    cost_range = (low, high)
state.publish("true_classes", "answers")
filtered = audit.filter_table(table, classes=chosen_classes, correctness=correctness, mflops_range=cost_range)

m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Inputs shown", f"{len(filtered):,}")
m1.caption(f"of {len(table):,} evaluated")
m2.metric("Mean MFLOPs", f"{filtered['mflops'].mean():.3f}" if len(filtered) else "–")
m3.metric("Mean est. ms", f"{filtered[audit.TIME_COLUMN].mean():.3f}" if len(filtered) else "–")
m4.metric("Accuracy", f"{filtered['correct'].mean():.1%}" if len(filtered) else "–")
m5.metric("Distinct paths", f"{filtered['path_id'].nunique():,}")

st.subheader("Costliest inputs")
RANKINGS = {"MFLOPs": "mflops", "estimated ms": audit.TIME_COLUMN}
c1, c2 = st.columns([1, 2])
rank_by = c1.radio("Rank by", list(RANKINGS), horizontal=True,
                   key=state.bound("rank_by", "MFLOPs", options=list(RANKINGS)))
count = c2.slider("How many", 4, 48, step=4, key=state.bound("top", 12, low=4, high=48))
state.publish("rank_by", "top")
st.caption(f"Estimated ms: what each input costs in a batch of {times.batch} on this machine ({times.device}), "
           "the always-on part's share plus every branch it ran, each timed alone. Pooling costs time but no "
           "multiply-adds, so the two rankings differ. The executor's gathers and scatters are left out, so "
           "a measured batch takes longer than the sum (`python -m drnet_core bench`).")
top = audit.costliest(filtered, count, by=RANKINGS[rank_by])
if len(top):
    state.thumbnails([evaluated.images[p] for p in top["position"]],
                     [f"#{i} {t}→{p} · {c:.{3 if rank_by == 'estimated ms' else 2}f}"
                      for i, t, p, c in zip(top["index"], top["true"], top["predicted"], top[RANKINGS[rank_by]])],
                     per_row=6)  # eight to a row wrap their captions inside words at 1280 px
st.dataframe(top.drop(columns=["position"]), hide_index=True, key="costliest_table",
             column_config={"confidence": st.column_config.NumberColumn(format="percent"),
                            "mflops": st.column_config.NumberColumn("MFLOPs", format="%.3f"),
                            audit.TIME_COLUMN: st.column_config.NumberColumn("est. ms", format="%.3f"),
                            "active_params": st.column_config.NumberColumn("active params", format="%d")})

left, right = st.columns(2)
if len(filtered):
    ms_per_mflop = audit.ms_per_mflop(filtered)
    left.plotly_chart(figures.time_vs_flops_figure(filtered), key="time_vs_flops")
    right.markdown(f"Estimated time per MFLOP ranges from **{ms_per_mflop.min():.3f}** to "
                   f"**{ms_per_mflop.max():.3f} ms** across these inputs. Two things make multiply-adds "
                   "understate time, most of all for the cheapest inputs: the always-on part costs every input "
                   "the same, and pooling costs time but no multiply-adds.")
    left, right = st.columns(2)
    left.plotly_chart(figures.cost_per_class_figure(audit.cost_per_class(filtered), class_names=classes), key="cost_per_class")
    right.plotly_chart(figures.cost_vs_error_figure(filtered), key="cost_vs_error")
    # Full width: in the half column beside the costs per class its last column was cut at 1280 px.
    st.dataframe(audit.cost_by_correctness(filtered), hide_index=True, key="correctness_table",
                 column_config={"mean MFLOPs": st.column_config.NumberColumn(format="%.3f"),
                                "median MFLOPs": st.column_config.NumberColumn(format="%.3f"),
                                "mean est. ms": st.column_config.NumberColumn(format="%.3f")})
else:
    st.info("No input matches these filters.")

origin = audit.provenance(settings.checkpoint_sha, run, evaluated.name)
# Written when the button is clicked: a page run would otherwise build and send the CSV every time.
st.download_button("Download per-instance results (CSV)", lambda: audit.to_csv(filtered, origin), file_name="drnet_audit.csv",
                   mime="text/csv", key="download_csv", icon=":material/download:")
