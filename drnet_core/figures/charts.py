"""Plotly figures for the explorer's views: pure functions from results to figures.

Each function takes plain arrays or tables (from `explorer`, `evaluate`, `clusters`, `audit`,
`tradeoff`), or one input's frozen `Inspection`, and returns a `plotly.graph_objects.Figure` with a
title, labelled axes and hover text.
The routing-path graph itself is drawn in `routing_graph`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from drnet_core.architecture import Architecture
from drnet_core.inspection import Inspection

ACCENT = "#3a86ff"
MUTED = "#8d99ae"
WARN = "#e63946"
GOOD = "#2a9d8f"
# Class k has one colour in every figure that colours by class: take it from `class_palette`.
CLASS_COLORS = px.colors.qualitative.T10
# Clusters are not classes, and the Routing clusters view shows both at once (scatter by cluster next to the
# class mix): saturated Dark24 against the muted T10, no cluster colour closer than CIE76 delta-E 20 to a
# class colour, so a cluster is never read as a class.
CLUSTER_COLORS = px.colors.qualitative.Dark24[:12]
OUTCOME_COLORS = {"correct": GOOD, "wrong": WARN}


# Class k also has one marker symbol, so a scatter of classes reads without telling colours apart.
CLASS_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "triangle-down", "star", "pentagon", "hexagon",
                 "cross", "x")


def class_symbols(class_names) -> dict[str, str]:
    """Class name -> plotly marker symbol, by the class's position in the model's class list."""
    return {str(name): CLASS_SYMBOLS[k % len(CLASS_SYMBOLS)] for k, name in enumerate(class_names)}


def class_palette(class_names) -> dict[str, str]:
    """Class name -> colour, by the class's position in the model's class list (not in a filtered table)."""
    return {str(name): CLASS_COLORS[k % len(CLASS_COLORS)] for k, name in enumerate(class_names)}


def class_color(class_names, name: str) -> str:
    return class_palette(class_names)[str(name)]


def cluster_palette(k: int) -> dict[str, str]:
    """Cluster label ("1" .. "k", as the views number them) -> colour."""
    return {str(c + 1): CLUSTER_COLORS[c % len(CLUSTER_COLORS)] for c in range(k)}


# Plotly shows its toolbar over the top right of every figure: a title pinned below it stays readable
# however long it is.
TITLE_BELOW_TOOLBAR = dict(x=0.01, yref="container", y=1, yanchor="top", pad=dict(t=34))
TOP_MARGIN = 76


def _style(figure: go.Figure, title: str, height: int = 360, **layout) -> go.Figure:
    figure.update_layout(title=dict(text=title, **TITLE_BELOW_TOOLBAR), height=height, template="plotly_white",
                         margin=dict(l=10, r=10, t=TOP_MARGIN, b=10), **layout)
    return figure


def probabilities_figure(probabilities: np.ndarray, class_names: tuple[str, ...], true_class: int | None = None,
                         title: str = "Class probabilities") -> go.Figure:
    probabilities = np.nan_to_num(np.asarray(probabilities, dtype=float))
    top = int(probabilities.argmax())
    colors = [ACCENT if i == top else "#c5d3e8" for i in range(len(class_names))]
    hover = [f"{name}: {p:.1%}" + (" (true class)" if i == true_class else "")
             for i, (name, p) in enumerate(zip(class_names, probabilities))]
    figure = go.Figure(go.Bar(x=probabilities, y=list(class_names), orientation="h", marker_color=colors,
                              text=[f"{p:.1%}" for p in probabilities], textposition="outside",
                              hovertext=hover, hoverinfo="text"))
    figure.update_xaxes(title="probability", range=[0, 1.12], tickformat=".0%")
    figure.update_yaxes(autorange="reversed", title=None)
    return _style(figure, title, height=340)


def weight_heatmap(inspection: Inspection, title: str = "Branch weights per cell") -> go.Figure:
    """One heatmap per cell of one inspected input: connections x branches, colour = weight, ● = branch ran."""
    architecture = inspection.architecture
    per_cell_w = [np.nan_to_num(cell.weights.astype(float)) for cell in inspection.cells]
    per_cell_x = [cell.executed for cell in inspection.cells]
    cells = len(architecture.cells)
    figure = make_subplots(rows=1, cols=cells, subplot_titles=[f"Cell {c + 1}" for c in range(cells)],
                           horizontal_spacing=0.06)
    for c, cell in enumerate(architecture.cells):
        rows = [f"n{s}→n{t}" for s, t in cell.connections]
        text = [[f"{w:.2f}{' ●' if x else ''}" for w, x in zip(wr, xr)] for wr, xr in zip(per_cell_w[c], per_cell_x[c])]
        hover = [[f"cell {c + 1}, {rows[e]}<br>{name}<br>weight {per_cell_w[c][e, b]:.3f}<br>"
                  f"{'ran' if per_cell_x[c][e, b] else 'skipped'}" for b, name in enumerate(cell.branch_names)]
                 for e in range(len(rows))]
        figure.add_trace(go.Heatmap(z=per_cell_w[c], x=list(cell.branch_names), y=rows, zmin=0, zmax=1,
                                    colorscale="Blues", text=text, texttemplate="%{text}", hovertext=hover,
                                    hoverinfo="text", showscale=c == cells - 1,
                                    colorbar=dict(title="weight", len=0.9)), row=1, col=c + 1)
        figure.update_yaxes(autorange="reversed", row=1, col=c + 1)
        figure.update_xaxes(tickangle=-40, row=1, col=c + 1)
    return _style(figure, title + "  (● = branch ran)", height=330)


def flops_distribution_figure(population: np.ndarray, value: float | None, dense: float,
                              title: str = "Executed MFLOPs per instance", label: str = "this image") -> go.Figure:
    population = np.nan_to_num(np.asarray(population, dtype=float))
    figure = go.Figure(go.Histogram(x=population, nbinsx=40, marker_color="#9bb7e0", name="evaluation set",
                                    hovertemplate="%{x} MFLOPs: %{y} images<extra></extra>"))
    figure.add_vline(x=dense, line=dict(color=MUTED, dash="dash"), annotation_text=f"dense {dense:.2f}",
                     annotation_position="top left")
    if value is not None:
        share = float((population <= value).mean()) if len(population) else 0.0
        figure.add_vline(x=value, line=dict(color=WARN, width=3),
                         annotation_text=f"{label}: {value:.2f} ({share:.0%} of the set cost ≤ this)",
                         annotation_position="top right")
    figure.update_xaxes(title="executed MFLOPs (multiply-adds, millions)")
    figure.update_yaxes(title="images")
    return _style(figure, title, height=320, showlegend=False, bargap=0.05)


def attribution_figure(pixels: np.ndarray, image: np.ndarray, title: str) -> go.Figure:
    """Signed attribution over the 28x28 input: red raises the explained output, blue lowers it."""
    pixels = np.nan_to_num(np.asarray(pixels, dtype=float))
    limit = float(np.abs(pixels).max()) or 1.0
    figure = make_subplots(rows=1, cols=2, subplot_titles=["model input", "attribution"], horizontal_spacing=0.04)
    figure.add_trace(go.Heatmap(z=np.asarray(image, dtype=float), colorscale="gray", showscale=False,
                                hovertemplate="row %{y}, col %{x}: %{z:.0f}<extra></extra>"), row=1, col=1)
    figure.add_trace(go.Heatmap(z=pixels, colorscale="RdBu_r", zmin=-limit, zmax=limit,
                                colorbar=dict(title="attribution"),
                                hovertemplate="row %{y}, col %{x}: %{z:.3g}<extra></extra>"), row=1, col=2)
    for col in (1, 2):
        figure.update_yaxes(autorange="reversed", scaleanchor=f"x{'' if col == 1 else col}", showticklabels=False,
                            row=1, col=col)
        figure.update_xaxes(showticklabels=False, row=1, col=col)
    return _style(figure, title, height=330)


def tradeoff_figure(rows: list[dict], current: dict, comparison: dict | None = None,
                    title: str = "Accuracy vs. cost") -> go.Figure:
    """Sweep rows (accuracy, mflops_fraction_of_dense, threshold, tau) as a curve; settings as stars."""
    table = pd.DataFrame(rows).sort_values("mflops_fraction_of_dense")
    figure = go.Figure(go.Scatter(
        x=table["mflops_fraction_of_dense"], y=table["accuracy"], mode="lines+markers", name="sweep",
        line=dict(color=MUTED), marker=dict(size=8, color=table["threshold"], colorscale="Viridis",
                                             colorbar=dict(title="threshold"), showscale=True),
        hovertext=[f"tau {r.tau:g}, threshold {r.threshold:g}<br>accuracy {r.accuracy:.1%}<br>"
                   f"{r.mflops_fraction_of_dense:.1%} of dense FLOPs" for r in table.itertuples()],
        hoverinfo="text"))
    for setting, name, color in ((current, "setting A", WARN), (comparison, "setting B", GOOD)):
        if setting is None:
            continue
        figure.add_trace(go.Scatter(
            x=[setting["mflops_fraction_of_dense"]], y=[setting["accuracy"]], mode="markers", name=name,
            marker=dict(symbol="star", size=18, color=color, line=dict(color="white", width=1)),
            hovertext=[f"{name}: tau {setting['tau']:g}, threshold {setting['threshold']:g}<br>"
                       f"accuracy {setting['accuracy']:.1%}<br>{setting['mflops_fraction_of_dense']:.1%} of dense"],
            hoverinfo="text"))
    # Log-scaled: dense sits at 100% and the routed settings near a tenth of it; on a linear axis they
    # crowded into one corner.
    fractions = list(table["mflops_fraction_of_dense"]) + [s["mflops_fraction_of_dense"] for s in (current, comparison)
                                                           if s is not None]
    fractions = [value for value in fractions if np.isfinite(value) and value > 0]
    if fractions:
        low, high = np.log10(min(fractions)) - 0.06, np.log10(max(fractions)) + 0.06
        ticks = [tick for tick in (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)
                 if low <= np.log10(tick) <= high]
        figure.update_xaxes(type="log", range=[low, high], tickvals=ticks, ticktext=[f"{tick:.0%}" for tick in ticks])
    figure.update_xaxes(title="mean FLOPs relative to dense (log scale)")
    # Autorange pads a flat curve far past 100%; keep the axis inside [0, 1] around the points shown.
    shown = list(table["accuracy"]) + [s["accuracy"] for s in (current, comparison) if s is not None]
    low, high = min(shown), max(shown)
    margin = max(0.02, (high - low) * 0.15)
    figure.update_yaxes(title="accuracy", tickformat=".0%", range=[max(0.0, low - margin), min(1.0, high + margin)])
    return _style(figure, title, height=380, legend=dict(orientation="h", y=-0.2))


def per_class_figure(table_a: pd.DataFrame, table_b: pd.DataFrame | None = None,
                     title: str = "Per-class accuracy and cost") -> go.Figure:
    # The classes are the rows here; colour tells setting A from setting B, so it is not the class palette.
    figure = make_subplots(rows=1, cols=2, subplot_titles=["accuracy", "mean executed MFLOPs"],
                           horizontal_spacing=0.12)
    for table, name, color in ((table_a, "A", ACCENT), (table_b, "B", GOOD)):
        if table is None:
            continue
        figure.add_trace(go.Bar(x=table["accuracy"], y=table["class"], orientation="h", name=f"setting {name}",
                                marker_color=color, legendgroup=name,
                                hovertemplate="%{y}: %{x:.1%}<extra>setting " + name + "</extra>"), row=1, col=1)
        figure.add_trace(go.Bar(x=table["mean MFLOPs"], y=table["class"], orientation="h", name=f"setting {name}",
                                marker_color=color, legendgroup=name, showlegend=False,
                                hovertemplate="%{y}: %{x:.3f} MFLOPs<extra>setting " + name + "</extra>"), row=1, col=2)
    figure.update_xaxes(tickformat=".0%", range=[0, 1], row=1, col=1)
    figure.update_xaxes(title="MFLOPs", row=1, col=2)
    figure.update_yaxes(autorange="reversed")
    return _style(figure, title, height=400, barmode="group", legend=dict(orientation="h", y=-0.12))


def mflops_histograms(values: dict[str, np.ndarray], dense: float, title: str = "Per-instance executed MFLOPs") -> go.Figure:
    figure = go.Figure()
    for (name, data), color in zip(values.items(), (ACCENT, GOOD)):
        figure.add_trace(go.Histogram(x=np.nan_to_num(np.asarray(data, dtype=float)), name=name, nbinsx=40,
                                      marker_color=color, opacity=0.65,
                                      hovertemplate="%{x} MFLOPs: %{y} images<extra>" + name + "</extra>"))
    figure.add_vline(x=dense, line=dict(color=MUTED, dash="dash"), annotation_text=f"dense {dense:.2f}")
    figure.update_xaxes(title="executed MFLOPs (multiply-adds, millions)")
    figure.update_yaxes(title="images")
    return _style(figure, title, height=340, barmode="overlay", legend=dict(orientation="h", y=-0.25))


def embedding_figure(coords: np.ndarray, color_values, color_name: str, hover: list[str],
                     categorical: bool, title: str, color_map: dict[str, str] | None = None) -> go.Figure:
    """2-D embedding, one point per input. color_map: category -> colour for categorical colouring
    (`class_palette` for classes, `cluster_palette` for clusters, `OUTCOME_COLORS`); without one,
    categories take the cluster colours in order."""
    coords = np.nan_to_num(np.asarray(coords, dtype=float))
    frame = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], color_name: color_values, "hover": hover})
    if categorical:
        frame[color_name] = frame[color_name].astype(str)
        present = set(frame[color_name].unique())
        if color_map is not None:
            # The palette's order (class order, cluster number) keeps the legend in that order.
            order = [name for name in color_map if name in present]
            order += sorted(present - set(order), key=lambda v: (len(v), v))
        else:
            order = sorted(present, key=lambda v: (len(v), v))
            color_map = {name: CLUSTER_COLORS[i % len(CLUSTER_COLORS)] for i, name in enumerate(order)}
        figure = px.scatter(frame, x="x", y="y", color=color_name, hover_name="hover", render_mode="webgl",
                            category_orders={color_name: order}, color_discrete_map=color_map)
    else:
        figure = px.scatter(frame, x="x", y="y", color=color_name, hover_name="hover", render_mode="webgl",
                            color_continuous_scale="Viridis")
    figure.update_traces(marker=dict(size=6, opacity=0.75))
    figure.update_xaxes(title="component 1")
    figure.update_yaxes(title="component 2")
    return _style(figure, title, height=480)


def class_mix_figure(mix: pd.DataFrame, title: str = "Class mix per cluster",
                     class_names: tuple[str, ...] | None = None) -> go.Figure:
    """Stacked bars: (clusters x classes) counts. class_names: the model's classes, for their colours
    (default: the table's columns, which `clusters.class_mix` gives in class order)."""
    palette = class_palette(class_names if class_names is not None else mix.columns)
    figure = go.Figure()
    for column in mix.columns:
        figure.add_trace(go.Bar(y=mix.index, x=mix[column], name=column, orientation="h",
                                marker_color=palette[str(column)],
                                hovertemplate="%{y}: %{x} × " + column + "<extra></extra>"))
    figure.update_xaxes(title="images")
    figure.update_yaxes(autorange="reversed")
    # Legend below the x-axis title, left-aligned with the plot: to the right of the plot it ran over the
    # cluster labels of a narrow column; an x-axis title and its ticks take about 60 px below the plot.
    return _style(figure, title, height=max(300, 40 * len(mix) + 210), barmode="stack",
                  legend=dict(orientation="h", x=0, xanchor="left", y=0, yref="container", yanchor="bottom",
                              traceorder="normal")  # class order, not the reversed order of stacked bars
                  ).update_layout(margin=dict(b=110))


def cost_per_class_figure(table: pd.DataFrame, title: str = "Mean executed MFLOPs per class",
                          class_names: tuple[str, ...] | None = None) -> go.Figure:
    """Bars per true class (`audit.cost_per_class`), each in its class's colour. class_names: the model's
    classes, so that a filtered table keeps every class's colour (default: the table's classes)."""
    palette = class_palette(class_names if class_names is not None else table.index)
    figure = go.Figure(go.Bar(x=table.index, y=table["mean MFLOPs"],
                              marker_color=[palette[str(name)] for name in table.index],
                              customdata=np.stack([table["accuracy"], table["n"]], axis=1),
                              hovertemplate="%{x}<br>%{y:.3f} MFLOPs<br>accuracy %{customdata[0]:.1%}"
                                            "<br>%{customdata[1]} images<extra></extra>"))
    figure.update_yaxes(title="mean MFLOPs")
    figure.update_xaxes(title="true class", tickangle=-30)
    return _style(figure, title, height=340)


def cost_vs_error_figure(table: pd.DataFrame, title: str = "Do wrong answers cost more?") -> go.Figure:
    figure = go.Figure()
    for outcome, correct, color in (("correct", True, GOOD), ("incorrect", False, WARN)):
        part = table[(table["correct"] == correct).fillna(False).to_numpy(dtype=bool)]
        if not len(part):  # no empty box for a group the filters left out
            continue
        figure.add_trace(go.Box(y=part["mflops"], name=f"{outcome} ({len(part):,})", marker_color=color,
                                boxmean=True, hoverinfo="y"))
    figure.update_yaxes(title="executed MFLOPs")
    return _style(figure, title, height=340, showlegend=False)


def time_vs_flops_figure(table: pd.DataFrame, title: str = "Multiply-adds against estimated time") -> go.Figure:
    """One point per input of an audit table with `est_ms`: how far time follows multiply-adds.

    Drawn with WebGL: the browser draws the full test split's 10,000 points in a fraction of the time SVG takes."""
    figure = go.Figure(go.Scattergl(
        x=table["mflops"], y=table["est_ms"], mode="markers", marker=dict(color=ACCENT, size=5, opacity=0.5),
        customdata=np.stack([table["index"], table["true"], table["path_id"]], axis=1),
        hovertemplate="#%{customdata[0]} %{customdata[1]}, path %{customdata[2]}<br>%{x:.3f} MFLOPs, "
                      "%{y:.3f} ms<extra></extra>"))
    figure.update_xaxes(title="executed MFLOPs")
    figure.update_yaxes(title="estimated ms per input")
    return _style(figure, title, height=340)


def selection_frequency_heatmap(architecture: Architecture, frequency: np.ndarray,
                                title: str = "How often each branch ran under noise") -> go.Figure:
    """One heatmap per cell: connections x branches, colour = share of noise samples in which the branch ran
    (`explorer.noise_selection_frequency`)."""
    per_cell = architecture.split_per_cell(np.nan_to_num(np.asarray(frequency, dtype=float)))
    cells = len(architecture.cells)
    figure = make_subplots(rows=1, cols=cells, subplot_titles=[f"Cell {c + 1}" for c in range(cells)],
                           horizontal_spacing=0.06)
    for c, cell in enumerate(architecture.cells):
        rows = [f"n{s}→n{t}" for s, t in cell.connections]
        hover = [[f"cell {c + 1}, {rows[e]}<br>{name}<br>ran in {per_cell[c][e, b]:.0%} of the samples"
                  for b, name in enumerate(cell.branch_names)] for e in range(len(rows))]
        figure.add_trace(go.Heatmap(z=per_cell[c], x=list(cell.branch_names), y=rows, zmin=0, zmax=1,
                                    colorscale="Blues", text=[[f"{v:.0%}" for v in row] for row in per_cell[c]],
                                    texttemplate="%{text}", hovertext=hover, hoverinfo="text",
                                    showscale=c == cells - 1,
                                    colorbar=dict(title="ran in", tickformat=".0%", len=0.9)), row=1, col=c + 1)
        # Cells of one network share their connections: label them once, at the left, so that no
        # label sits on the cell before it.
        same_rows = c > 0 and cell.connections == architecture.cells[0].connections
        figure.update_yaxes(autorange="reversed", showticklabels=not same_rows, row=1, col=c + 1)
        figure.update_xaxes(tickangle=-40, row=1, col=c + 1)
    # Title and cell titles below the toolbar plotly shows at the top right.
    return _style(figure, title, height=360).update_layout(
        title=dict(yref="container", y=1, yanchor="top", pad=dict(t=30)), margin=dict(t=86))


def gumbel_demo_figure(table: pd.DataFrame, palette: dict[str, str], threshold: float, tau: float,
                       title: str = "Branch weights of one connection as tau changes") -> go.Figure:
    """`palette`: branch name -> colour in the connection's branch order (`Architecture.palette`)."""
    figure = go.Figure()
    for branch, (name, color) in enumerate(palette.items()):
        part = table[table["branch"] == branch]
        figure.add_trace(go.Scatter(x=part["tau"], y=part["weight"], mode="lines", name=name,
                                    line=dict(color=color, width=2.5),
                                    hovertemplate="tau %{x:.2f}: weight %{y:.3f}<extra>" + name + "</extra>"))
    # At the left, where the curves sit at 0 or 1: at the right the label ran over the curves and past the plot.
    figure.add_hline(y=threshold, line=dict(color=WARN, dash="dash"), annotation_position="top left",
                     annotation_text=f"threshold {threshold:g}: branches above it run")
    # On a log axis plotly places shapes by the exponent, not the value.
    figure.add_vline(x=np.log10(tau), line=dict(color=MUTED, dash="dot"), annotation_text=f"tau {tau:g}")
    # Named ticks only: plotly's own log ticks label 0.05 as "5" and 0.2 as "2".
    ticks = [value for value in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50)
             if table["tau"].min() <= value <= table["tau"].max()] if len(table) else []
    # The range pinned to the curve (in exponents, as a log axis takes it): left to itself, plotly stretched
    # it to 1e-64 for the threshold's label at the plot's left edge.
    span = [float(np.log10(table["tau"].min())), float(np.log10(table["tau"].max()))] if len(table) else None
    figure.update_xaxes(title="temperature tau", type="log", range=span, tickvals=ticks or None,
                        ticktext=[f"{value:g}" for value in ticks] or None)
    figure.update_yaxes(title="recalibrated weight", range=[0, 1.02])
    return _style(figure, title, height=400, legend=dict(orientation="h", y=-0.22))


def connection_weights_figure(weights: np.ndarray, palette: dict[str, str], threshold: float,
                              title: str) -> go.Figure:
    """`palette`: branch name -> colour in the connection's branch order (`Architecture.palette`)."""
    weights = np.nan_to_num(np.asarray(weights, dtype=float))
    colors = [color if w >= threshold else "#d6dbe3" for color, w in zip(palette.values(), weights)]
    figure = go.Figure(go.Bar(x=list(palette), y=weights, marker_color=colors,
                              text=[f"{w:.2f}" for w in weights], textposition="outside",
                              hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    # The label in the right margin: inside the plot it sat on the last bar.
    figure.add_hline(y=threshold, line=dict(color=WARN, dash="dash"), annotation_text="threshold",
                     annotation_position="right", annotation_font_color=WARN)
    figure.update_yaxes(title="weight", range=[0, 1.1])
    return _style(figure, title, height=320).update_layout(margin=dict(r=72))
