"""Figures that colour by class give a class one colour everywhere; clusters take colours no class has; the
class mix keeps its legend off its labels; the teaching demo starts on a connection that tau moves."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from plotly.colors import hex_to_rgb

from drnet_core.analysis import explorer

from drnet_core.figures import charts as figures, payoff as payoff_figures
from drnet_core.data.datasets import FASHION_CLASSES
from drnet_core.net.ops import OPS
from helpers import shipped_gallery_input

CLASSES = tuple(FASHION_CLASSES)


def trace_colors(figure) -> dict[str, str]:
    """Legend name -> marker colour, for figures with one trace per category."""
    return {trace.name: trace.marker.color for trace in figure.data}


def point_colors(trace, names) -> dict[str, str]:
    """Category -> colour, for one trace that colours its points or bars one by one."""
    return dict(zip([str(name) for name in names], trace.marker.color))


def lab(color: str) -> np.ndarray:
    """CIE L*a*b* (D65) of a #rrggbb colour."""
    rgb = np.asarray(hex_to_rgb(color), dtype=float) / 255
    rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_a_class_has_one_colour_in_every_class_figure():
    rng = np.random.default_rng(0)
    labels = np.arange(60) % len(CLASSES)
    names = np.asarray(CLASSES, dtype=object)[labels]
    embedding = figures.embedding_figure(rng.normal(size=(60, 2)), names, "class", ["x"] * 60, True, "e",
                                         color_map=figures.class_palette(CLASSES))
    mix = pd.DataFrame(rng.integers(0, 9, size=(3, len(CLASSES))), columns=list(CLASSES),
                       index=["cluster 1", "cluster 2", "cluster 3"])
    class_mix = figures.class_mix_figure(mix, class_names=CLASSES)
    # A filtered audit table and a per-class summary that miss classes: the rest keep their colours.
    kept = ["Bag", "Trouser", "Ankle boot"]
    per_class_table = pd.DataFrame({"n": [5, 4, 3], "accuracy": [0.9, 0.8, 0.7], "mean MFLOPs": [3.0, 2.0, 1.0]},
                                   index=kept)
    cost = figures.cost_per_class_figure(per_class_table, class_names=CLASSES)
    per_class = {name: {"n": 5, "accuracy": 0.8, "mean_mflops": 2.0 + i} for i, name in enumerate(kept)}
    cost_error = payoff_figures.class_cost_error_figure(per_class, class_names=CLASSES)

    seen = [trace_colors(embedding), trace_colors(class_mix), point_colors(cost.data[0], cost.data[0].x),
            trace_colors(cost_error)]
    for name in kept:
        expected = figures.class_color(CLASSES, name)
        assert [colors[name] for colors in seen] == [expected] * len(seen), name
    assert len(set(figures.class_palette(CLASSES).values())) == len(CLASSES)  # no two classes alike
    assert trace_colors(class_mix) == figures.class_palette(CLASSES)


def test_cluster_colours_are_far_from_every_class_colour():
    clusters = figures.cluster_palette(12)
    assert list(clusters) == [str(c) for c in range(1, 13)]
    distances = [np.linalg.norm(lab(cluster) - lab(cls)) for cluster in clusters.values()
                 for cls in figures.class_palette(CLASSES).values()]
    assert min(distances) > 15  # CIE76 delta-E: two colours this far apart are not taken for one
    scatter = figures.embedding_figure(np.zeros((8, 2)), np.arange(8) % 4 + 1, "cluster", ["x"] * 8, True, "e",
                                       color_map=figures.cluster_palette(4))
    assert trace_colors(scatter) == figures.cluster_palette(4)
    assert [trace.name for trace in scatter.data] == ["1", "2", "3", "4"]


def test_the_class_mix_legend_sits_below_the_plot():
    mix = pd.DataFrame(np.ones((6, len(CLASSES)), dtype=int), columns=list(CLASSES),
                       index=[f"cluster {c}" for c in range(1, 7)])
    layout = figures.class_mix_figure(mix).layout
    assert layout.legend.orientation == "h"
    assert layout.legend.yref == "container" and layout.legend.yanchor == "bottom" and layout.legend.y == 0
    # Room under the axis for its title and a legend of ten classes on two or three rows.
    assert layout.margin.b >= 100


@pytest.fixture(scope="module")
def shipped():
    import torch

    model, model_input, tau, threshold = shipped_gallery_input(0)
    with torch.inference_mode():
        inspection = explorer.inspect_input(model, model_input, tau=tau, threshold=threshold)
    return model, inspection


def test_the_demo_connection_is_the_one_tau_moves_most(shipped):
    model, inspection = shipped
    taus = np.geomspace(0.05, 5.0, 60)
    scores = {(c, e): explorer.connection_tau_sensitivity(explorer.connection_logits(inspection, c, e), taus)
              for c, cell in enumerate(model.cells) for e in range(len(cell.connections))}
    chosen = explorer.most_tau_sensitive_connection(inspection, taus)
    assert scores[chosen] == max(scores.values())

    # A saturated connection: one branch keeps nearly all the weight at tau 1.
    def top_weight(key):
        logits = explorer.connection_logits(inspection, *key)
        return explorer.gumbel_softmax_demo(logits, np.array([1.0]), threshold=0.5)["weight"].max()

    saturated = max(scores, key=top_weight)
    assert top_weight(saturated) > 0.95 and saturated != chosen
    assert scores[chosen] > 1.5 * scores[saturated]
    # The chosen connection's weights really travel: its largest weight falls by a third or more over the range.
    curve = explorer.gumbel_softmax_demo(explorer.connection_logits(inspection, *chosen), taus, threshold=0.5)
    largest = curve.groupby("tau")["weight"].max()
    assert largest.iloc[0] - largest.iloc[-1] > 0.33


def test_tau_sensitivity_is_near_zero_for_a_saturated_connection():
    taus = np.geomspace(0.05, 5.0, 60)
    saturated = explorer.connection_tau_sensitivity(np.array([60.0, 0.0, 0.0, 0.0]), taus)
    balanced = explorer.connection_tau_sensitivity(np.array([1.0, 0.5, 0.0, -0.5]), taus)
    assert saturated < 0.01 < balanced
    assert balanced <= 2 * (1 - 1 / 4) + 1e-9


def test_the_tau_curve_spans_its_taus_on_the_log_axis():
    taus = np.geomspace(0.05, 5.0, 30)
    table = explorer.gumbel_softmax_demo(np.array([0.0, 1.0, 2.0, 5.0]), taus, threshold=0.3)
    figure = figures.gumbel_demo_figure(table, {name: OPS[name].color for name in OPS}, 0.3, 1.0)
    # A log axis takes its range in exponents; without one, plotly stretched it to 1e-64.
    assert list(figure.layout.xaxis.range) == pytest.approx([np.log10(0.05), np.log10(5.0)])
