"""Temperature and threshold: accuracy and cost over the evaluation set at two settings, the trade-off
curve, per-instance cost, per-class figures and the inputs whose prediction or path flips."""
from __future__ import annotations

import streamlit as st

from drnet_app import caches, evaluation, state, tradeoff_rows, ui
from drnet_core.figures import charts as figures
from drnet_core.analysis import tradeoff
from drnet_core.defaults import TAU_MAX, TAU_MIN
from drnet_core.analysis.evaluate import SWEEP_THRESHOLDS
from drnet_core.runtime import use_every_core_in_this_thread

settings = state.current_settings()
model, meta = caches.model_and_meta(settings.checkpoint)
classes = settings.class_names
evaluated = evaluation.limited_set(settings)

st.title("Temperature & threshold")
st.caption(f"Setting A is the sidebar's; setting B is chosen here. Both are evaluated on {evaluated.name}.")


def metric_row(label: str, summary: dict, other: dict) -> None:
    st.markdown(f"**{label}** · tau {summary['tau']:g}, threshold {summary['threshold']:g}")
    c1, c2, c3, c4, c5 = st.columns(5)
    accuracy_change = summary['accuracy'] - other['accuracy']
    c1.metric("Accuracy", f"{summary['accuracy']:.2%}", ui.nonzero_delta(f"{accuracy_change:+.2%}"))
    cost_change = summary['mean_mflops'] - other['mean_mflops']
    c2.metric("Mean MFLOPs", f"{summary['mean_mflops']:.3f}", ui.nonzero_delta(f"{cost_change:+.3f}"),
              delta_color="inverse")
    c3.metric("FLOPs vs dense", f"{summary['mflops_fraction_of_dense']:.1%}")
    c3.caption(f"dense: {summary['dense_mflops']:.2f} MFLOPs")
    c4.metric("Active params", f"{summary['mean_active_params']:,.0f}")
    c4.caption(f"of {summary['dense_params']:,}")
    c5.metric("Distinct paths", f"{summary['distinct_paths']:,}")


def numbers(summary_a: dict, summary_b: dict, runs=()) -> None:
    for label, run in zip("AB", runs):
        no_branch = int((run.path_masks.sum(dim=1) == 0).sum())
        if no_branch:
            st.warning(f"Setting {label} (tau {run.tau:g}, threshold {run.threshold:g}): **{no_branch:,} of "
                       f"{len(run.labels):,}** inputs run no branch at all; every cell passes their input through "
                       "unchanged, and their predictions come from the stem, reductions and head alone.")
    metric_row("Setting A (sidebar)", summary_a, summary_b)
    metric_row("Setting B", summary_b, summary_a)


def flip_list(flips, total: int) -> None:
    st.subheader("Flip list")
    predictions_flipped = int(flips["prediction changed"].sum())
    st.markdown(f"**{predictions_flipped:,}** of {total:,} predictions and **{len(flips):,}** paths or "
                "predictions change between A and B.")
    if len(flips):
        shown = flips.head(16)
        ui.thumbnails([evaluated.images[p] for p in shown["position"]],
                         [f"#{i}: {a} → {b}" if a != b else f"#{i}: {a}, {n} branches"
                          for i, a, b, n in zip(shown["index"], shown["predicted A"], shown["predicted B"],
                                                shown["branches changed"])])
        # "change" says whether the prediction changed: its check-box column would only push the table wider.
        st.dataframe(flips.drop(columns=["position", "prediction changed"]), hide_index=True, height=280,
                     key="flip_table",
                     column_config={"MFLOPs A": st.column_config.NumberColumn(format="%.3f"),
                                    "MFLOPs B": st.column_config.NumberColumn(format="%.3f")})


# A fragment: moving setting B's sliders reruns only this part, not the sidebar and checkpoint checks.
# Streamlit keeps each element of the last run on screen, dimmed, until this run writes the same place, so
# the figures are written only once they are ready, always in the same order, and nothing transient (a
# spinner, a progress bar) takes a figure's place: those go in `work`, above the figures. A tau this session
# has not seen shows a preview's numbers first.
@st.fragment
def compare_settings() -> None:
    use_every_core_in_this_thread()  # a fragment's rerun can run in a thread of its own
    b_tau, b_threshold = st.columns(2)
    tau_b = b_tau.slider("Setting B: tau", TAU_MIN, TAU_MAX, step=0.05, persist_state="session",
                         key=state.bound("tau_b", 1.0, low=TAU_MIN, high=TAU_MAX))
    threshold_b = b_threshold.slider("Setting B: threshold", 0.0, 1.0, step=0.01, persist_state="session",
                                     key=state.bound("threshold_b", 0.1, low=0.0, high=1.0))
    state.publish("tau_b", "threshold_b")
    numbers_slot, work = st.empty(), st.empty()

    # A threshold step re-routes only the paths that change, so only a new tau is worth a preview.
    context = (settings.checkpoint.sha256, settings.dataset_name, settings.eval_limit, settings.noise_seed)
    taus = {context + (settings.tau,), context + (tau_b,)}
    seen = st.session_state.setdefault("_tradeoff_taus_seen", set())
    new_tau = not taus <= seen
    if new_tau and tradeoff_rows.uses_preview(settings):
        work.caption(":material/hourglass_top: Updating: the figures below are the previous setting's until "
                     "they are redrawn.")
        preview_a = tradeoff_rows.preview_summaries(settings, settings.tau, (settings.threshold,))[0]
        preview_b = tradeoff_rows.preview_summaries(settings, tau_b, (threshold_b,))[0]
        with numbers_slot.container():
            st.info(f"Preview on {preview_a['dataset']}; the exact figures on {evaluated.name} follow.",
                    icon=":material/hourglass_top:")
            numbers(preview_a, preview_b)

    run_a = caches.routed(settings.checkpoint, settings.dataset_name, settings.eval_limit, settings.tau,
                          settings.threshold, settings.noise_seed)
    run_b = caches.routed(settings.checkpoint, settings.dataset_name, settings.eval_limit, tau_b, threshold_b,
                          settings.noise_seed)
    summary_a = evaluation.setting_summary(settings)
    summary_b = evaluation.setting_summary(settings, tau_b, threshold_b)
    with numbers_slot.container():
        numbers(summary_a, summary_b, (run_a, run_b))

    curve = trade_off_curve(work, summary_a, summary_b, tau_b)
    left, right = st.columns(2)
    left.plotly_chart(curve["figure"], key="tradeoff_curve")
    left.caption(curve["caption"])
    right.plotly_chart(figures.mflops_histograms({"setting A": run_a.mflops.numpy(),
                                                  "setting B": run_b.mflops.numpy()}, model.dense_mflops()),
                       key="mflops_histogram")
    per_class = figures.per_class_figure(tradeoff.per_class_table(summary_a), tradeoff.per_class_table(summary_b))
    st.plotly_chart(per_class, key="per_class")
    flip_list(tradeoff.flip_list(run_a, run_b, classes, evaluated.indices), len(run_a.labels))
    seen.update(taus)
    if new_tau:  # the next tau step is the likely one: after a threshold step, nothing new to warm
        tradeoff_rows.warm_next_tau_steps(settings, tuple(SWEEP_THRESHOLDS))


def trade_off_curve(work, summary_a: dict, summary_b: dict, tau_b: float) -> dict:
    """The threshold sweep at A's tau: over the whole set once this server has swept it (or when asked),
    else over the preview subset, with the stars from the same images as the curve. `work` holds the
    updating note while it is computed, then the button that asks for the whole set."""
    same_tau = tau_b == settings.tau
    asked = bool(st.session_state.get("full_sweep"))  # the button below, clicked: this run is its answer
    full = asked or tradeoff_rows.full_sweep_ready(settings) or not tradeoff_rows.uses_preview(settings)
    if full:
        with work.container():
            rows = tradeoff_rows.full_sweep(settings)
        star_a, star_b, curve_set = summary_a, summary_b, evaluated.name
    else:
        rows = tradeoff_rows.preview_summaries(settings, settings.tau, tuple(SWEEP_THRESHOLDS))
        star_a = tradeoff_rows.preview_summaries(settings, settings.tau, (settings.threshold,))[0]
        star_b = tradeoff_rows.preview_summaries(settings, tau_b, (summary_b["threshold"],))[0]
        curve_set = star_a["dataset"]
    work.empty()
    if not full:
        work.button(f"Sweep all {settings.eval_limit:,} images at tau {settings.tau:g}", key="full_sweep",
                    icon=":material/query_stats:", help="Draw the curve below over the whole evaluation set.")
    figure = figures.tradeoff_figure(rows, star_a, star_b if same_tau else None,
                                     f"Accuracy vs. cost at tau {settings.tau:g} (threshold sweep)")
    caption = (f"Curve: thresholds {SWEEP_THRESHOLDS[0]:g}–{SWEEP_THRESHOLDS[-1]:g} at setting A's tau, on "
               f"{curve_set}, as the stars. " + ("Stars: settings A and B." if same_tau else
                                                 f"Star: setting A. Setting B (tau {tau_b:g}) lies on another "
                                                 "tau's curve and is not drawn."))
    return {"figure": figure, "caption": caption}


compare_settings()
