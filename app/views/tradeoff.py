"""Temperature and threshold: accuracy and cost over the evaluation set at two settings, the trade-off
curve, per-instance cost, per-class figures and the inputs whose prediction or path flips."""
from __future__ import annotations

import streamlit as st

import state
from drnet_core import figures, tradeoff
from drnet_core.defaults import TAU_MAX, TAU_MIN
from drnet_core.evaluate import SWEEP_THRESHOLDS
from drnet_core.runtime import use_every_core_in_this_thread

settings = state.current_settings()
model, meta = state.model_and_meta(settings.checkpoint_path, settings.checkpoint_sha)
classes = settings.class_names
evaluated = state.limited_set(settings)

st.title("Temperature & threshold")
st.caption(f"Setting A is the sidebar's; setting B is chosen here. Both are evaluated on {evaluated.name}.")


def metric_row(label: str, summary: dict, other: dict) -> None:
    st.markdown(f"**{label}** · tau {summary['tau']:g}, threshold {summary['threshold']:g}")
    c1, c2, c3, c4, c5 = st.columns(5)
    accuracy_change = summary['accuracy'] - other['accuracy']
    c1.metric("Accuracy", f"{summary['accuracy']:.2%}", state.nonzero_delta(f"{accuracy_change:+.2%}"))
    cost_change = summary['mean_mflops'] - other['mean_mflops']
    c2.metric("Mean MFLOPs", f"{summary['mean_mflops']:.3f}", state.nonzero_delta(f"{cost_change:+.3f}"),
              delta_color="inverse")
    c3.metric("FLOPs vs dense", f"{summary['mflops_fraction_of_dense']:.1%}")
    c3.caption(f"dense: {summary['dense_mflops']:.2f} MFLOPs")
    c4.metric("Active params", f"{summary['mean_active_params']:,.0f}")
    c4.caption(f"of {summary['dense_params']:,}")
    c5.metric("Distinct paths", f"{summary['distinct_paths']:,}")


# A fragment: moving setting B's sliders reruns only this part, not the sidebar and checkpoint checks.
# The numbers come first; the threshold sweep (each threshold's summary cached) and the figures follow.
@st.fragment
def compare_settings() -> None:
    use_every_core_in_this_thread()  # a fragment's rerun can run in a thread of its own
    b_tau, b_threshold = st.columns(2)
    tau_b = b_tau.slider("Setting B: tau", TAU_MIN, TAU_MAX, step=0.05, persist_state="session",
                         key=state.bound("tau_b", 1.0, low=TAU_MIN, high=TAU_MAX))
    threshold_b = b_threshold.slider("Setting B: threshold", 0.0, 1.0, step=0.01, persist_state="session",
                                     key=state.bound("threshold_b", 0.1, low=0.0, high=1.0))
    state.publish("tau_b", "threshold_b")

    run_a = state.routed_run(settings)
    run_b = state.routed_run(settings, tau=tau_b, threshold=threshold_b)
    summary_a, summary_b = state.setting_summary(settings), state.setting_summary(settings, tau_b, threshold_b)
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
        rows = state.threshold_sweep(settings)
        # B's star belongs on its own tau's curve: drawn only when B shares A's tau.
        same_tau = tau_b == settings.tau
        st.plotly_chart(figures.tradeoff_figure(rows, summary_a, summary_b if same_tau else None,
                                                f"Accuracy vs. cost at tau {settings.tau:g} (threshold sweep)"),
                        key="tradeoff_curve")
        st.caption(f"Curve: thresholds {SWEEP_THRESHOLDS[0]:g}–{SWEEP_THRESHOLDS[-1]:g} at setting A's tau, on "
                   f"{evaluated.name}, as the stars. " + ("Stars: settings A and B." if same_tau else
                                                         f"Star: setting A. Setting B (tau {tau_b:g}) lies on "
                                                         "another tau's curve and is not drawn."))
    with right:
        st.plotly_chart(figures.mflops_histograms({"setting A": run_a.mflops.numpy(),
                                                   "setting B": run_b.mflops.numpy()}, model.dense_mflops()),
                        key="mflops_histogram")

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
        # "change" says whether the prediction changed: its check-box column would only push the table wider.
        st.dataframe(flips.drop(columns=["position", "prediction changed"]), hide_index=True, height=280,
                     key="flip_table",
                     column_config={"MFLOPs A": st.column_config.NumberColumn(format="%.3f"),
                                    "MFLOPs B": st.column_config.NumberColumn(format="%.3f")})


compare_settings()
