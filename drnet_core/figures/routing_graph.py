"""The routing path of one input as a graph, and plotly drawings of it (DRNet, arXiv 1905.04849).

`routing_graph` builds a networkx DiGraph of the whole network for one inspected input (an
`Inspection`): the input, every cell's nodes (node 0 = cell input, then the intermediate nodes, then the
cell output), and one graph node per candidate branch on every connection, sitting between the
connection's source and target. Branch nodes carry their op, recalibrated weight, multiply-adds and
whether they ran. `routing_graph_of_cells` builds the same from an architecture and per-cell arrays that
are not one input's (a cluster's typical path). `path_diff_graph` marks, for two inspections, the
branches only in A, only in B or in both. `routing_figure` / `path_diff_figure` are pure functions from
such a graph to a plotly figure. Everything is read per cell; nothing here splits a flat vector.
"""
from __future__ import annotations

from typing import Sequence

import networkx as nx
import numpy as np
import plotly.graph_objects as go

from drnet_core.architecture import Architecture
from drnet_core.inspection import Inspection
from drnet_core.figures.charts import TITLE_BELOW_TOOLBAR, TOP_MARGIN

# Each branch op's colour comes from the branch registry (`net.ops.OPS`) through the architecture
# description, shared by every routing figure.
DIFF_COLORS = {"both": "#4c78a8", "only A": "#e45756", "only B": "#54a24b"}
SKIPPED_COLOR = "#c9ced6"
NODE_COLOR = "#33415c"
CELL_WIDTH = 4.0  # x distance from a cell's input node to its output node


def _connection_lane(source: int, target: int) -> float:
    """Vertical centre of a connection's branch fan: short hops above the node line, long ones below."""
    span = target - source
    side = 1.0 if span % 2 == 1 else -1.0
    return side * (2.2 + 3.2 * ((span - 1) // 2))


def routing_graph(inspection: Inspection) -> nx.DiGraph:
    """DiGraph of the network for one inspected input."""
    return routing_graph_of_cells(inspection.architecture, [cell.weights for cell in inspection.cells],
                                  [cell.executed for cell in inspection.cells])


def routing_graph_of_cells(architecture: Architecture, weights: Sequence[np.ndarray],
                           executed: Sequence[np.ndarray]) -> nx.DiGraph:
    """DiGraph of the network for per-cell (connections, branches) weights and selected-branch masks."""
    shapes = [np.shape(w) for w in weights], [np.shape(x) for x in executed]
    if shapes[0] != architecture.routing_shape() or shapes[1] != architecture.routing_shape():
        raise ValueError(f"per-cell weights {shapes[0]} and masks {shapes[1]} do not fit the architecture's "
                         f"{architecture.routing_shape()}")
    graph = nx.DiGraph()
    graph.add_node("input", kind="io", label="image", x=-1.5, y=0.0)
    previous = "input"
    for c, cell in enumerate(architecture.cells):
        nodes = cell.nodes
        x0 = c * (CELL_WIDTH + 1.5)
        step = CELL_WIDTH / (nodes + 1)
        for j in range(nodes + 1):
            graph.add_node(("node", c, j), kind="node", cell=c, label=f"n{j}", x=x0 + j * step, y=0.0)
        out = ("out", c)
        graph.add_node(out, kind="node", cell=c, label=f"cell {c + 1} out", x=x0 + CELL_WIDTH, y=0.0)
        graph.add_edge(previous, ("node", c, 0), kind="stage")
        # The cell output is its input plus every intermediate node (see Cell.forward).
        for j in range(nodes + 1):
            graph.add_edge(("node", c, j), out, kind="sum")
        for e, (source, target) in enumerate(cell.connections):
            lane = _connection_lane(source, target)
            branches = len(cell.branch_names)
            for b, name in enumerate(cell.branch_names):
                key = ("branch", c, e, b)
                offset = (b - (branches - 1) / 2) * 0.42
                graph.add_node(key, kind="branch", cell=c, connection=e, branch=b, op=name, color=architecture.color(name),
                               source=source, target=target,
                               weight=float(weights[c][e, b]), executed=bool(executed[c][e, b]),
                               mflops=cell.branch_mflops[e][b],
                               x=x0 + (source + target) / 2 * step, y=lane + offset)
                graph.add_edge(("node", c, source), key, kind="branch")
                graph.add_edge(key, ("node", c, target), kind="branch")
        previous = out
    last_x = (len(architecture.cells) - 1) * (CELL_WIDTH + 1.5) + CELL_WIDTH + 1.5
    graph.add_node("classifier", kind="io", label="classifier", x=last_x, y=0.0)
    graph.add_edge(previous, "classifier", kind="stage")
    return graph


def executed_mflops(graph: nx.DiGraph) -> float:
    """Multiply-adds (millions) of the branches that ran, read off the graph."""
    return sum(data["mflops"] for _, data in graph.nodes(data=True) if data.get("kind") == "branch" and data["executed"])


def path_diff_graph(before: Inspection, after: Inspection) -> nx.DiGraph:
    """Routing graph whose branch nodes carry `status`: 'both', 'only A', 'only B' or 'neither', with A the
    branches that ran in `before` and B those in `after`, and each side's weight."""
    if before.architecture != after.architecture:
        raise ValueError("the two inspections route through different networks")
    either = [a.executed | b.executed for a, b in zip(before.cells, after.cells)]
    graph = routing_graph_of_cells(before.architecture, [cell.weights for cell in before.cells], either)
    for c, (cell_a, cell_b) in enumerate(zip(before.cells, after.cells)):
        for (e, b), ran_a in np.ndenumerate(cell_a.executed):
            ran_b = cell_b.executed[e, b]
            data = graph.nodes[("branch", c, e, b)]
            data["status"] = "both" if ran_a and ran_b else "only A" if ran_a else "only B" if ran_b else "neither"
            data["weight_a"], data["weight_b"] = float(cell_a.weights[e, b]), float(cell_b.weights[e, b])
    return graph


def diff_counts(graph: nx.DiGraph) -> dict[str, int]:
    counts = {"both": 0, "only A": 0, "only B": 0}
    for _, data in graph.nodes(data=True):
        if data.get("status") in counts:
            counts[data["status"]] += 1
    return counts


# ---- drawing --------------------------------------------------------------------------------

def _segments(graph: nx.DiGraph, keys) -> tuple[list, list]:
    xs, ys = [], []
    for key in keys:
        x, y = graph.nodes[key]["x"], graph.nodes[key]["y"]
        for source in graph.predecessors(key):
            xs += [graph.nodes[source]["x"], x, None]
            ys += [graph.nodes[source]["y"], y, None]
        for target in graph.successors(key):
            xs += [x, graph.nodes[target]["x"], None]
            ys += [y, graph.nodes[target]["y"], None]
    return xs, ys


def _base_figure(graph: nx.DiGraph, title: str) -> go.Figure:
    figure = go.Figure()
    xs, ys = [], []
    for source, target, data in graph.edges(data=True):
        if data["kind"] in ("stage", "sum"):
            xs += [graph.nodes[source]["x"], graph.nodes[target]["x"], None]
            ys += [graph.nodes[source]["y"], graph.nodes[target]["y"], None]
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#8d99ae", width=2, dash="dot"),
                                hoverinfo="skip", showlegend=False))
    return figure


def _add_structure_nodes(figure: go.Figure, graph: nx.DiGraph) -> None:
    keys = [k for k, d in graph.nodes(data=True) if d["kind"] in ("node", "io")]
    hover = []
    for key in keys:
        data = graph.nodes[key]
        if data["kind"] == "io":
            hover.append(data["label"])
        elif key[0] == "out":
            hover.append(f"cell {data['cell'] + 1} output = input + intermediate nodes")
        else:
            hover.append(f"cell {data['cell'] + 1}, node {key[2]}" + (" (cell input)" if key[2] == 0 else ""))
    figure.add_trace(go.Scatter(
        x=[graph.nodes[k]["x"] for k in keys], y=[graph.nodes[k]["y"] for k in keys],
        mode="markers+text", text=[graph.nodes[k]["label"] for k in keys], textposition="bottom center",
        marker=dict(size=18, color=NODE_COLOR, line=dict(color="white", width=2)),
        hovertext=hover, hoverinfo="text", showlegend=False, textfont=dict(size=11, color="#33415c")))


def _finish(figure: go.Figure, graph: nx.DiGraph, title: str, height: int) -> go.Figure:
    cells = sorted({d["cell"] for _, d in graph.nodes(data=True) if "cell" in d})
    for c in cells:
        x0 = graph.nodes[("node", c, 0)]["x"]
        x1 = graph.nodes[("out", c)]["x"]
        figure.add_vrect(x0=x0 - 0.4, x1=x1 + 0.4, fillcolor="#edf2fb", opacity=0.6, line_width=0, layer="below")
        figure.add_annotation(x=(x0 + x1) / 2, y=1.0, yref="paper", text=f"<b>Cell {c + 1}</b>", showarrow=False,
                              font=dict(size=13, color="#33415c"))
    figure.update_layout(
        title=dict(text=title, **TITLE_BELOW_TOOLBAR), height=height, plot_bgcolor="white", paper_bgcolor="white",
        margin=dict(l=10, r=10, t=TOP_MARGIN, b=10), hovermode="closest",
        legend=dict(orientation="h", yanchor="bottom", y=-0.12, xanchor="left", x=0),
        xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor=None),
    )
    return figure


def routing_figure(graph: nx.DiGraph, title: str = "Routing path", height: int = 430) -> go.Figure:
    """Selected branches drawn in their op's colour, width and opacity growing with weight; skipped ones faded."""
    figure = _base_figure(graph, title)
    branches = [(k, d) for k, d in graph.nodes(data=True) if d["kind"] == "branch"]
    skipped = [k for k, d in branches if not d["executed"]]
    xs, ys = _segments(graph, skipped)
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=SKIPPED_COLOR, width=0.8),
                                opacity=0.5, hoverinfo="skip", showlegend=False))
    # Selected branches: one trace each, since line width and opacity are per trace in plotly.
    for key, data in sorted((kd for kd in branches if kd[1]["executed"]), key=lambda kd: kd[1]["weight"]):
        xs, ys = _segments(graph, [key])
        weight = float(np.clip(data["weight"], 0.0, 1.0))
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=data["color"],
                                                                         width=1.5 + 6 * weight),
                                    opacity=0.35 + 0.65 * weight, hoverinfo="skip", showlegend=False))
    for op in dict.fromkeys(d["op"] for _, d in branches):  # the model's branch types, in its order
        keys = [k for k, d in branches if d["op"] == op]
        color = graph.nodes[keys[0]]["color"]
        on = [graph.nodes[k]["executed"] for k in keys]
        hover = [f"<b>{d['op']}</b><br>cell {d['cell'] + 1}, n{d['source']}→n{d['target']}<br>"
                 f"weight {d['weight']:.3f}<br>{d['mflops']:.3f} MFLOPs<br>"
                 f"{'selected (ran)' if d['executed'] else 'skipped'}"
                 for d in (graph.nodes[k] for k in keys)]
        # A legend entry of its own, so the key shows the op's colour rather than a skipped branch's grey.
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=op, legendgroup=op,
                                    marker=dict(size=11, color=color)))
        figure.add_trace(go.Scatter(
            x=[graph.nodes[k]["x"] for k in keys], y=[graph.nodes[k]["y"] for k in keys], mode="markers", name=op,
            legendgroup=op, showlegend=False,
            marker=dict(size=[8 + 10 * graph.nodes[k]["weight"] if o else 6 for k, o in zip(keys, on)],
                        color=[color if o else SKIPPED_COLOR for o in on],
                        line=dict(color=[color for _ in keys], width=1.5)),
            hovertext=hover, hoverinfo="text"))
    _add_structure_nodes(figure, graph)
    return _finish(figure, graph, title, height)


def path_diff_figure(graph: nx.DiGraph, title: str = "Path difference", label_a: str = "A",
                     label_b: str = "B", height: int = 430) -> go.Figure:
    """Branches only in A, only in B and in both, each in its own colour; branches neither ran faded."""
    figure = _base_figure(graph, title)
    branches = [(k, d) for k, d in graph.nodes(data=True) if d["kind"] == "branch"]
    xs, ys = _segments(graph, [k for k, d in branches if d["status"] == "neither"])
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=SKIPPED_COLOR, width=0.8),
                                opacity=0.5, hoverinfo="skip", showlegend=False))
    names = {"both": "in both", "only A": f"only in {label_a}", "only B": f"only in {label_b}"}
    for status, color in DIFF_COLORS.items():
        keys = [k for k, d in branches if d["status"] == status]
        xs, ys = _segments(graph, keys)
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=3.5),
                                    hoverinfo="skip", showlegend=False, opacity=0.85))
        hover = [f"<b>{d['op']}</b><br>cell {d['cell'] + 1}, n{d['source']}→n{d['target']}<br>{names[status]}<br>"
                 f"weight {label_a}: {d['weight_a']:.3f}, {label_b}: {d['weight_b']:.3f}<br>{d['mflops']:.3f} MFLOPs"
                 for d in (graph.nodes[k] for k in keys)]
        figure.add_trace(go.Scatter(x=[graph.nodes[k]["x"] for k in keys], y=[graph.nodes[k]["y"] for k in keys],
                                    mode="markers", name=f"{names[status]} ({len(keys)})",
                                    marker=dict(size=11, color=color, line=dict(color="white", width=1)),
                                    hovertext=hover, hoverinfo="text"))
    neither = [k for k, d in branches if d["status"] == "neither"]
    figure.add_trace(go.Scatter(x=[graph.nodes[k]["x"] for k in neither], y=[graph.nodes[k]["y"] for k in neither],
                                mode="markers", name=f"in neither ({len(neither)})",
                                marker=dict(size=6, color=SKIPPED_COLOR),
                                hovertext=[f"{graph.nodes[k]['op']}: skipped in both" for k in neither],
                                hoverinfo="text"))
    _add_structure_nodes(figure, graph)
    return _finish(figure, graph, title, height)
