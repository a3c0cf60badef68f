"""Plotly figures of the pay-off view: pure functions from `payoff` rows and tables to figures.

`payoff_curve_figure` draws accuracy against mean MFLOPs: a DRNet's curves over thresholds (one per
tau) with the controls of `payoff` as points; `cost_deciles_figure` and `class_cost_error_figure`
show whether compute follows difficulty.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from drnet_core.figures.charts import ACCENT, GOOD, MUTED, WARN
from drnet_core.figures.charts import _style, class_palette, class_symbols

CURVE_COLORS = (ACCENT, "#7b2cbf", "#f4a261", "#2a9d8f", "#6c757d")
CONTROL_MARKERS = {"static": ("square", "#e76f51", "static cells"), "plain": ("triangle-up", "#588157", "plain CNN"),
                   "random": ("x", WARN, "random routing")}


def _hover(row: dict) -> str:
    setting = f"tau {row['tau']:g}, threshold {row['threshold']:g}<br>" if row.get("kind") in ("drnet", "random") else ""
    return (f"{row['name']}<br>{setting}accuracy {row['accuracy']:.2%}<br>{row['mean_mflops']:.3f} mean MFLOPs"
            + (f"<br>{row['params']:,} parameters" if row.get("params") else ""))


def _finite(rows: list[dict]) -> list[dict]:
    return [row for row in rows if math.isfinite(row["accuracy"]) and math.isfinite(row["mean_mflops"])
            and row["mean_mflops"] > 0]


def payoff_curve_figure(curves: dict[str, list[dict]], controls: list[dict], current: dict | None = None,
                        budget: dict | None = None, title: str = "Accuracy against cost") -> go.Figure:
    """curves: legend name -> `drnet` rows (one tau, thresholds varied); controls: `static`, `plain`
    and `random` rows as points; current: the sidebar's setting (a star); budget: the setting a
    budget chose (a diamond, with the budget as a dashed vertical line). Log-scaled MFLOPs."""
    figure = go.Figure()
    shown: list[dict] = []
    for (name, rows), color in zip(curves.items(), CURVE_COLORS * (1 + len(curves) // len(CURVE_COLORS))):
        rows = sorted(_finite(rows), key=lambda row: row["mean_mflops"])
        if not rows:
            continue
        shown += rows
        figure.add_trace(go.Scatter(
            x=[row["mean_mflops"] for row in rows], y=[row["accuracy"] for row in rows], mode="lines+markers",
            name=name, line=dict(color=color, width=2), marker=dict(size=7, color=color),
            hovertext=[_hover(row) for row in rows], hoverinfo="text"))
    for kind, (symbol, color, label) in CONTROL_MARKERS.items():
        rows = [row for row in _finite(controls) if row["kind"] == kind]
        if not rows:
            continue
        shown += rows
        figure.add_trace(go.Scatter(
            x=[row["mean_mflops"] for row in rows], y=[row["accuracy"] for row in rows], mode="markers", name=label,
            marker=dict(symbol=symbol, size=11, color=color, line=dict(color="white", width=1)),
            hovertext=[_hover(row) for row in rows], hoverinfo="text"))
    for row, name, symbol, color in ((current, "current setting", "star", WARN),
                                     (budget, "budget's setting", "diamond", GOOD)):
        if row is None or not _finite([row]):
            continue
        shown.append(row)
        figure.add_trace(go.Scatter(
            x=[row["mean_mflops"]], y=[row["accuracy"]], mode="markers", name=name,
            marker=dict(symbol=symbol, size=17, color=color, line=dict(color="white", width=1)),
            hovertext=[_hover(row)], hoverinfo="text"))
    if budget is not None and budget.get("max_mflops"):
        figure.add_vline(x=budget["max_mflops"], line=dict(color=GOOD, dash="dash"),
                         annotation_text=f"budget {budget['max_mflops']:g} MFLOPs", annotation_position="bottom right")
    figure.update_xaxes(title="mean executed MFLOPs per image (log scale)", type="log")
    costs = [row["mean_mflops"] for row in shown] + ([budget["max_mflops"]] if budget and budget.get("max_mflops") else [])
    if costs:
        # Autorange would stretch to fit the budget line's label; the range of a log axis is in log10 units.
        low, high = math.log10(min(costs)) - 0.08, math.log10(max(costs)) + 0.08
        # Named ticks: plotly's own log ticks write 20 and 30 as "2" and "3" after a "10".
        ticks = [mantissa * 10.0 ** exponent for exponent in range(math.floor(low), math.ceil(high) + 1)
                 for mantissa in (1, 2, 3, 5) if low <= math.log10(mantissa * 10.0 ** exponent) <= high]
        figure.update_xaxes(range=[low, high], tickvals=ticks, ticktext=[f"{tick:g}" for tick in ticks])
    if shown:
        accuracies = [row["accuracy"] for row in shown]
        margin = max(0.005, (max(accuracies) - min(accuracies)) * 0.1)
        figure.update_yaxes(range=[max(0.0, min(accuracies) - margin), min(1.0, max(accuracies) + margin)])
    figure.update_yaxes(title="accuracy", tickformat=".1%")
    # The legend goes under the plot: beside it, it would squeeze the curves on a narrow screen.
    return _style(figure, title, height=460, legend=dict(orientation="h", y=-0.22, x=0))


def cost_deciles_figure(difficulty: dict, title: str = "Error rate by cost decile") -> go.Figure:
    """`payoff.cost_against_difficulty`'s deciles: error rate per decile, cheapest first."""
    rows = difficulty["deciles"]
    figure = go.Figure(go.Bar(
        x=[f"{row['decile']}" for row in rows], y=[row["error_rate"] for row in rows], marker_color=ACCENT,
        customdata=np.array([[row["mean_mflops"], row["n"]] for row in rows]).reshape(-1, 2),
        hovertemplate="decile %{x}: error rate %{y:.1%}<br>mean %{customdata[0]:.3f} MFLOPs, "
                      "%{customdata[1]} images<extra></extra>"))
    figure.update_xaxes(title="cost decile (1 = cheapest tenth of the inputs)", type="category")
    figure.update_yaxes(title="error rate", tickformat=".0%", rangemode="tozero")
    return _style(figure, title, height=340)


def class_cost_error_figure(per_class: dict, title: str = "Per class: mean cost against error",
                            class_names: tuple[str, ...] | None = None) -> go.Figure:
    """`evaluate.summarize`'s per_class block: one point per class, mean MFLOPs against error rate, each in
    its class's colour and symbol. class_names: the model's classes (per_class leaves out a class with no images, so
    its keys alone could shift the colours)."""
    names = list(per_class)
    palette = class_palette(class_names if class_names is not None else names)
    symbols = class_symbols(class_names if class_names is not None else names)
    figure = go.Figure()
    # One trace per class, named in a legend under the plot: names written beside the points ran into each
    # other where classes cost alike, and the top one was cut by the plot's edge. Each class has its own
    # symbol as well as its colour, so the legend reads without telling colours apart.
    for name in names:
        row = per_class[name]
        figure.add_trace(go.Scatter(
            x=[row["mean_mflops"]], y=[1 - row["accuracy"]], mode="markers", name=name,
            marker=dict(size=13, color=palette[name], symbol=symbols[name], line=dict(color="#33415c", width=1)),
            customdata=[row["n"]], hovertemplate=name + ": %{x:.3f} MFLOPs, error %{y:.1%} (%{customdata} images)"
                                                       "<extra></extra>"))
    errors = [1 - per_class[name]["accuracy"] for name in names]
    figure.update_xaxes(title="mean executed MFLOPs")
    figure.update_yaxes(title="error rate", tickformat=".0%", range=[0, max(errors, default=0.0) * 1.12 or 1.0])
    return _style(figure, title, height=400, legend=dict(orientation="h", x=0, y=-0.25, yanchor="top",
                                                         traceorder="normal"))


def routing_health_figure(health: list[dict], title: str = "Largest selection pattern's share per cell") -> go.Figure:
    """`payoff.routing_health` rows: the share of the most common pattern per cell; collapsed cells in red."""
    figure = go.Figure(go.Bar(
        x=[f"cell {row['cell']}" for row in health], y=[row["largest_pattern_share"] for row in health],
        marker_color=[WARN if row["collapsed"] else MUTED for row in health],
        customdata=np.array([[row["distinct_patterns"], row["entropy_bits"]] for row in health]).reshape(-1, 2),
        hovertemplate="%{x}: %{y:.1%} of inputs on one pattern<br>%{customdata[0]} distinct patterns, "
                      "%{customdata[1]:.2f} bits<extra></extra>"))
    figure.update_yaxes(title="share of inputs", tickformat=".0%", range=[0, 1.05])
    return _style(figure, title, height=300, showlegend=False)
