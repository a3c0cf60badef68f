"""Temperature and threshold: accuracy and cost over the evaluation set at two settings, the trade-off
curve, per-instance cost, per-class figures and the inputs whose prediction or path flips."""
from __future__ import annotations

import streamlit as st

import state
from drnet_core import figures, tradeoff
from drnet_core.evaluate import SWEEP_THRESHOLDS

settings = state.current_settings()
model, meta = state.model_and_meta(settings.checkpoint_path, settings.checkpoint_sha)
classes = settings.class_names
evaluated = state.limited_set(settings)

st.title("Temperature & threshold")
st.caption(f"Setting A is the sidebar's; setting B is chosen here. Both are evaluated on {evaluated.name}.")

b_tau, b_threshold = st.columns(2)
tau_b = b_tau.slider("Setting B: tau", 0.1, 4.0, step=0.05, key=state.bound("tau_b", 1.0, low=0.1, high=4.0))
threshold_b = b_threshold.slider("Setting B: threshold", 0.0, 1.0, step=0.01,
                                 key=state.bound("threshold_b", 0.1, low=0.0, high=1.0))
state.publish("tau_b", "threshold_b")

run_a = state.routed_run(settings)
run_b = state.routed_run(settings, tau=tau_b, threshold=threshold_b)
summary_a, summary_b = state.run_summary(settings, run_a), state.run_summary(settings, run_b)


def metric_row(label: str, summary: dict, other: dict) -> None:
    st.markdown(f"**{label}** · tau {summary['tau']:g}, threshold {summary['threshold']:g}")
    c1, c2, c3, c4, c5 = st.columns(5)
    c1.metric("Accuracy", f"{summary['accuracy']:.2%}", f"{summary['accuracy'] - other['accuracy']:+.2%} vs other")
    c2.metric("Mean MFLOPs", f"{summary['mean_mflops']:.3f}", f"{summary['mean_mflops'] - other['mean_mflops']:+.3f}",
              delta_color="inverse")
    c3.metric("FLOPs vs dense", f"{summary['mflops_fraction_of_dense']:.1%}", f"dense {summary['dense_mflops']:.2f} MFLOPs",
              delta_color="off")
    c4.metric("Active params", f"{summary['mean_active_params']:,.0f}", f"of {summary['dense_params']:,}",
              delta_color="off")
    c5.metric("Distinct paths", f"{summary['distinct_paths']:,}")


for label, run in (("A", run_a), ("B", run_b)):
    no_branch = int((run.path_masks.sum(dim=1) == 0).sum())
    if no_branch:
        st.warning(f"Setting {label} (tau {run.tau:g}, threshold {run.threshold:g}): **{no_branch:,} of "
                   f"{len(run.labels):,}** inputs run no branch at all; every cell passes their input through "
                   "unchanged, and their predictions come from the stem, reductions and head alone.")

metric_row("Setting A (sidebar)", summary_a, summary_b)
metric_row("Setting B", summary_b, summary_a)

left, right = st.columns(2)
with left:
    sweep_limit = min(settings.eval_limit, 1000)
    thresholds = SWEEP_THRESHOLDS
    rows = []
    progress = st.progress(0.0, text=f"Sweeping thresholds at tau {settings.tau:g}…")
    for step, threshold in enumerate(thresholds):
        rows.append(state.run_summary(settings, state.routed(
            settings.checkpoint_path, settings.checkpoint_sha, settings.dataset_name, sweep_limit, settings.tau,
            threshold, settings.noise_seed)))
        progress.progress((step + 1) / len(thresholds), text=f"Sweeping thresholds at tau {settings.tau:g}…")
    progress.empty()
    st.plotly_chart(figures.tradeoff_figure(rows, summary_a, summary_b,
                                            f"Accuracy vs. cost at tau {settings.tau:g} (threshold sweep)"),
                    key="tradeoff_curve")
    st.caption(f"Curve: thresholds {SWEEP_THRESHOLDS[0]:g}–{SWEEP_THRESHOLDS[-1]:g} at setting A's tau on the first {sweep_limit:,} images; stars: settings A "
               f"and B on {evaluated.name}.")
with right:
    st.plotly_chart(figures.mflops_histograms({"setting A": run_a.mflops.numpy(), "setting B": run_b.mflops.numpy()},
                                              model.dense_mflops()), key="mflops_histogram")

st.plotly_chart(figures.per_class_figure(tradeoff.per_class_table(summary_a), tradeoff.per_class_table(summary_b)),
                key="per_class")

st.subheader("Flip list")
flips = tradeoff.flip_list(run_a, run_b, classes, evaluated.indices)
predictions_flipped = int(flips["prediction changed"].sum())
st.markdown(f"**{predictions_flipped:,}** of {len(run_a.labels):,} predictions and **{len(flips):,}** paths or "
            "predictions change between A and B.")
if len(flips):
    shown = flips.head(16)
    state.thumbnails([evaluated.images[p] for p in shown["position"]],
                     [f"#{i}: {a} → {b}" if a != b else f"#{i}: {a}, {n} branches"
                      for i, a, b, n in zip(shown["index"], shown["predicted A"], shown["predicted B"],
                                            shown["branches changed"])])
    st.dataframe(flips.drop(columns=["position"]), hide_index=True, height=280, key="flip_table",
                 column_config={"MFLOPs A": st.column_config.NumberColumn(format="%.3f"),
                                "MFLOPs B": st.column_config.NumberColumn(format="%.3f")})
