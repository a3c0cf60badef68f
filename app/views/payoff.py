"""Does routing pay off? The DRNet's accuracy-vs-cost curve against static baselines and random routing,
cost against difficulty, a collapse alarm per cell, and a setting chosen for a budget on held-out images."""
from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from drnet_app import caches, payoff_rows, state
from drnet_core.analysis import payoff
from drnet_core.figures import payoff as payoff_figures
from drnet_core.compute_gate import heavy_work
from drnet_core.data.datasets import DatasetError
from drnet_core.analysis.evaluate import SWEEP_TAUS, SWEEP_THRESHOLDS, summarize

settings = state.current_settings()
model, meta = caches.model_and_meta(settings.checkpoint)
model_name = f"DRNet {settings.checkpoint.name}"
epochs = meta.get("total_epochs", meta.get("epochs"))

st.title("Does routing pay off?")
st.caption("A routed network earns its routers if it is more accurate than static networks of its cost and than "
           "the same network with its paths dealt out at random, if it spends more on harder inputs, and if no "
           "cell sends every input the same way.")

# One set of images for the whole page: the comparison table's (the full test split) when the table was
# made for this checkpoint at this tau, else the sidebar's first N evaluation images.
from_table = payoff_rows.comparison_table_rows(settings)
full_set = caches.evaluation_set()
limit = len(full_set) if from_table else settings.eval_limit
shown_set = full_set.subset(limit).name
if limit != settings.eval_limit:
    st.info(f"This page evaluates **{shown_set}**, not the sidebar's first {settings.eval_limit:,} images: its curve "
            "and baselines come from the comparison table, which was made on that set. The budget box chooses on "
            "held-out training images.", icon=":material/info:")
else:
    st.caption(f"Evaluated on **{shown_set}** (the sidebar's image count); the budget box chooses on held-out "
               "training images.")


def routed(tau: float, threshold: float):
    return caches.routed(settings.checkpoint, settings.dataset_name, limit, tau, threshold, settings.noise_seed)


with st.spinner(f"Routing {limit:,} images and their random-routing control…", show_time=True):
    run = routed(settings.tau, settings.threshold)
    control = caches.random_control(settings.checkpoint, settings.dataset_name, limit, settings.tau,
                                    settings.threshold, settings.noise_seed, model_name)
current = payoff.comparison_row(run, model, name=f"{model_name}, current setting", kind="drnet", model=model_name,
                                epochs=epochs)
summary = summarize(run, model, shown_set, settings.class_names)

no_branch = int((run.path_masks.sum(dim=1) == 0).sum())
if no_branch:
    st.warning(f"At threshold {settings.threshold:g}, **{no_branch:,} of {len(run.labels):,}** inputs run no branch "
               "at all: every cell passes its input through unchanged, and the prediction comes from the stem, "
               "reductions and head alone.")

# Captions, not metric deltas: these are context for the value, not a change of it, and a delta would
# draw an arrow and colour it.
advantage = current["accuracy"] - control["accuracy"]
m1, m2, m3, m4 = st.columns(4)
m1.metric("Accuracy, current setting", f"{current['accuracy']:.2%}")
m1.caption(f"tau {settings.tau:g}, threshold {settings.threshold:g}")
m2.metric("Mean MFLOPs", f"{current['mean_mflops']:.3f}")
m2.caption(f"{summary['mflops_fraction_of_dense']:.0%} of dense")
m3.metric("Random routing, same costs", f"{control['accuracy']:.2%}",
          help="The same network with the router's paths permuted across the inputs.")
points = round(100 * advantage, 2)
m3.caption(f"The router is {abs(points):.2f} points {'more' if points > 0 else 'less'} accurate" if points else
           "The router is as accurate")
m4.metric("Distinct paths", f"{summary['distinct_paths']:,}")
m4.caption(f"Coefficient of variation of the cost: {summary['mflops_cv']:.2f}")

# ---- the curve, its controls, and a setting for a budget ---------------------------------------------

st.subheader("Accuracy against cost")
left, right = st.columns([3, 1], gap="medium")
with right:
    others = right.multiselect("Also draw tau", [tau for tau in SWEEP_TAUS if tau != settings.tau],
                               key="payoff_taus", placeholder="no other tau",
                               help="More curves over the same thresholds, computed now on the images shown.")

    def apply_budget(tau: float, threshold: float) -> None:
        # A callback runs before the next rerun draws the sidebar, so its sliders can still be set.
        st.session_state["tau"], st.session_state["threshold"] = tau, threshold

    budget_bounds = (0.01, 10_000.0)
    if "budget" not in st.session_state:
        raw = st.query_params.get("budget")
        try:
            parsed = float(raw) if raw is not None else None
        except ValueError:
            parsed = None
        # A hand-edited link outside the box's bounds leaves the box empty rather than failing.
        inside = parsed is not None and math.isfinite(parsed) and budget_bounds[0] <= parsed <= budget_bounds[1]
        st.session_state["budget"] = parsed if inside else None
    budget_mflops = st.number_input("Budget: mean MFLOPs per image", *budget_bounds, step=0.5,
                                    format="%.2f", key="budget", placeholder="e.g. 5",
                                    help="The most accurate setting within this budget on held-out images, as "
                                         "training chooses its default.")
    if budget_mflops is None:
        st.query_params.pop("budget", None)
    else:
        state.publish("budget")

budget_row, budget_choice = None, None
if budget_mflops is not None:
    # The sweep the checkpoint recorded when its default was chosen answers at once; a checkpoint without
    # one (an upload from elsewhere) is swept now on its held-out images.
    held_out_rows, held_out_name = payoff.recorded_sweep(meta), payoff_rows.recorded_sweep_name(meta)
    if held_out_rows is None:
        try:
            with st.spinner("Sweeping the held-out images…", show_time=True):
                held_out_rows, held_out_name = caches.held_out_sweep(settings.checkpoint, settings.eval_limit)
        except DatasetError as error:
            right.warning(f"No held-out images to choose on: {error}")
    if held_out_rows is not None:
        budget_choice = payoff.setting_for_budget(held_out_rows, budget_mflops)
        chosen = f"tau {budget_choice['tau']:g}, threshold {budget_choice['threshold']:g}"
        with right:
            if budget_choice["meets_budget"]:
                st.success(f"Within {budget_mflops:g} MFLOPs: **{chosen}**, {budget_choice['accuracy']:.2%} at "
                           f"{budget_choice['mean_mflops']:.2f} MFLOPs on {held_out_name}.")
            else:
                st.warning(f"No setting of the sweep costs {budget_mflops:g} MFLOPs or less on {held_out_name}; the "
                           f"cheapest is {chosen} at {budget_choice['mean_mflops']:.2f} MFLOPs.")
            st.button("Apply to the sidebar", key="apply_budget", icon=":material/tune:", on_click=apply_budget,
                      args=(budget_choice["tau"], budget_choice["threshold"]),
                      disabled=(budget_choice["tau"], budget_choice["threshold"]) == (settings.tau, settings.threshold))
            st.caption(f"Chosen over tau {', '.join(f'{t:g}' for t in SWEEP_TAUS)} and thresholds "
                       f"{SWEEP_THRESHOLDS[0]:g}–{SWEEP_THRESHOLDS[-1]:g}.")
            with st.spinner(f"Checking {chosen} on the images shown…", show_time=True):
                budget_run = routed(budget_choice["tau"], budget_choice["threshold"])
            budget_row = {**payoff.comparison_row(budget_run, model, kind="drnet", model=model_name,
                                                  name=f"{model_name}, chosen for {budget_mflops:g} MFLOPs"),
                          "max_mflops": budget_mflops}
            st.markdown(f"On the images shown: {budget_row['accuracy']:.2%} at {budget_row['mean_mflops']:.2f} "
                        "MFLOPs.")
            budget_alarms = payoff.collapse_alarms(payoff.routing_health(model, budget_run))
            if budget_alarms:
                st.warning("This setting trips the collapse alarm: " + " ".join(
                    alarm["message"] for alarm in budget_alarms), icon=":material/warning:")

if from_table:
    table_rows, table_set = from_table
    curves = {f"tau {settings.tau:g}": [row for row in table_rows if row["kind"] == "drnet" and row["tau"] == settings.tau]}
    controls = [row for row in table_rows if row["kind"] != "drnet"] + [control]
    source = (f"Curve and baselines: the comparison table (`docs/results/accuracy_vs_flops.json`, written by "
              f"`scripts/performance_report.py`) on {table_set}; the current setting and its random-routing control "
              "computed now on the same images.")
else:
    with st.spinner(f"Sweeping thresholds at tau {settings.tau:g}…", show_time=True), heavy_work():
        # Nearest the current threshold first: each run then starts from a neighbour already routed and
        # re-routes only the paths that change (`caches.routed`); the rows are sorted by cost below.
        thresholds = sorted(set(SWEEP_THRESHOLDS) | {settings.threshold}, key=lambda h: abs(h - settings.threshold))
        curve_runs = [routed(settings.tau, threshold) for threshold in thresholds]
    curves = {f"tau {settings.tau:g}": payoff.drnet_curve_rows(model, curve_runs, model_name=model_name,
                                                               epochs=epochs)}
    # The shipped baselines do not depend on the DRNet's setting: the comparison table's rows serve any tau
    # when it was made on these images.
    table_baselines = payoff_rows.table_baseline_rows(limit)
    with st.spinner("Evaluating the static baselines…", show_time=True):
        baselines = table_baselines or caches.baseline_rows(settings.dataset_name, limit)
    controls = baselines + [control]
    source = (f"Curve, current setting and random-routing control computed now on {shown_set}"
              + (" with the sidebar's Gumbel noise" if settings.noise else "")
              + ("; baselines from the comparison table (`docs/results/accuracy_vs_flops.json`) on the same images."
                 if table_baselines else "; baselines evaluated now on the same images.")
              + " The table's DRNet curve applies only to a bundled checkpoint at its default tau without noise.")
controls = [{**row, "name": payoff.readable_name(row)} for row in controls]
for tau in others:
    with st.spinner(f"Sweeping thresholds at tau {tau:g}…", show_time=True), heavy_work():
        curves[f"tau {tau:g}"] = payoff.drnet_curve_rows(model, [routed(tau, threshold) for threshold in SWEEP_THRESHOLDS],
                                                         model_name=model_name, epochs=epochs)

left.plotly_chart(payoff_figures.payoff_curve_figure(curves, controls, current, budget_row,
                                                     f"{model_name}: thresholds varied, controls as points"),
                  key="payoff_curve")
left.caption(source + " Random routing: the same network with the router's paths permuted across the inputs, so "
             "every cost is the same but no path depends on its input.")
similar = [row for row in controls if row["kind"] in ("static", "plain")
           and row["mean_mflops"] <= current["mean_mflops"] * (1 + payoff.TARGETS["control_cost_window"])]
best = max(similar, key=lambda row: row["accuracy"], default=None)
if best is not None:
    verdict = "beats" if current["accuracy"] > best["accuracy"] else "does not beat"
    left.markdown(f"The current setting **{verdict}** the most accurate static network of similar or lower cost "
                  f"({best['name']}): {best['accuracy']:.2%} at {best['mean_mflops']:.2f} MFLOPs.")

# ---- cost against difficulty ---------------------------------------------------------------------------

st.subheader("Does compute follow difficulty?")
difficulty = payoff.cost_against_difficulty(run)
d1, d2 = st.columns(2)
d1.metric("Misclassified / correct mean MFLOPs", f"{difficulty['misclassified_cost_ratio']:.2f}")
d1.caption(f"{difficulty['misclassified_mflops']:.3f} against {difficulty['correct_mflops']:.3f} MFLOPs")
d2.metric("Error rate, costliest tenth / cheapest tenth", f"{difficulty['costliest_to_cheapest_error_ratio']:.2f}")
d2.caption(f"{difficulty['deciles'][-1]['error_rate']:.1%} against {difficulty['deciles'][0]['error_rate']:.1%}")
c1, c2 = st.columns(2)
c1.plotly_chart(payoff_figures.cost_deciles_figure(difficulty), key="cost_deciles")
c2.plotly_chart(payoff_figures.class_cost_error_figure(summary["per_class"], class_names=settings.class_names),
                key="class_cost_error")
st.caption("If routing spends compute where it is needed, the costlier deciles and classes are the harder ones "
           "(ratios above 1). Deciles are cut by rank, so each holds a tenth of the inputs even when many share a "
           "cost.")

# ---- collapse alarm -----------------------------------------------------------------------------------

st.subheader("Collapse alarm")
health = payoff.routing_health(model, run)
alarms = payoff.collapse_alarms(health)
for alarm in alarms:
    (st.error if alarm["level"] == "error" else st.warning)(alarm["message"])
if not alarms:
    st.success("Every cell routes its inputs along several patterns.")
h1, h2 = st.columns(2)
# The share as text, rounded as the alarms above round it.
health_table = pd.DataFrame(health)
health_table["largest_pattern_share"] = health_table["largest_pattern_share"].map(payoff.share_text)
h1.dataframe(health_table, hide_index=True, key="routing_health",
             column_config={"cell": st.column_config.NumberColumn(width="small"),
                            "distinct_patterns": st.column_config.NumberColumn("patterns", width="small"),
                            "largest_pattern_share": st.column_config.TextColumn("largest share"),
                            "entropy_bits": st.column_config.NumberColumn("bits", format="%.2f", width="small",
                                                                          help="entropy of the patterns"),
                            "collapsed": st.column_config.CheckboxColumn(width="small")})
h2.plotly_chart(payoff_figures.routing_health_figure(health), key="routing_health_figure")
st.caption("A cell's selection pattern is which branches run on each of its connections. Collapsed: fewer than 8 "
           "patterns, or one pattern for more than 60% of the inputs; an error when one pattern takes 95% or more.")
