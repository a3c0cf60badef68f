"""The Start page's guided tour and the pay-off view's readable figures, without Streamlit: tour links
carry the state their view restores, the cell note follows the routing health it is given, control
names are readable, one rounding for pattern shares, and a budget answered from the recorded sweep."""
from __future__ import annotations

import math
import urllib.parse

import pytest
import torch

from drnet_core.analysis import payoff, tour
from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
from drnet_core.data.datasets import FASHION_CLASSES
from drnet_core.net.ops import OPS


def test_tour_links_name_their_view_and_state():
    labels = torch.tensor([0, 7, 6, 4, 7, 6, 4, 1])
    steps = tour.tour_steps(labels, FASHION_CLASSES, 0.25, 0.3, indices=torch.arange(100, 108))
    assert len(steps) == 5
    links = [tour.tour_link(step) for step in steps]
    views = [link.split("?")[0] for link in links]
    assert views == ["inspect", "inspect", "how-it-works", "payoff", "audit"]
    compare = urllib.parse.parse_qs(links[1].split("?", 1)[1])
    # The first sneaker (position 1) against the first shirt (position 2), named by their split indices.
    assert compare["image"] == ["1"] and compare["image_b"] == ["2"] and compare["tab"] == ["Compare"]
    assert steps[1].expect[0] == "B (Shirt · test image #102)"
    assert urllib.parse.parse_qs(links[0].split("?", 1)[1])["tau"] == ["0.25"]
    demo = urllib.parse.parse_qs(links[2].split("?", 1)[1])
    assert demo["demo_image"] == ["3"] and demo["tau"] == ["1"]  # the first coat, at a tau unlike the sidebar's


def test_tour_falls_back_to_the_classes_a_checkpoint_has():
    labels = torch.tensor([3, 1, 0, 2])
    steps = tour.tour_steps(labels, ("cat", "dog", "ship", "frog"), 1.0, 0.1)
    assert all(step.expect for step in steps)
    assert steps[2].params["tau"] == 0.5  # the demo shows a tau other than the sidebar's


def test_the_branch_key_takes_colours_from_the_registry():
    rows = tour.branch_key(tuple(OPS))
    assert [row["color"] for row in rows] == [op.color for op in OPS.values()]
    assert "no multiply-adds" in next(row["what"] for row in rows if row["branch"] == "identity")
    assert "separable convolution, 3x3" in rows[0]["what"]


def health(*rows):
    return [{"cell": cell, "distinct_patterns": patterns, "largest_pattern_share": share, "entropy_bits": 0.0,
             "collapsed": patterns < 8 or share > 0.6} for cell, patterns, share in rows]


def test_the_cell_note_follows_the_measured_health():
    note = tour.cell_routing_note(health((1, 2, 0.9998), (2, 3, 0.65), (3, 12, 0.397)))
    assert note["barely"] == [1, 2] and note["routes"] == [3]
    assert note["sentence"].startswith("Cells 1 and 2 barely route")
    assert "99.98%" in note["sentence"]
    assert "Cell 3 routes per image: cell 3 uses 12 selection patterns" in note["sentence"]
    routing = tour.cell_routing_note(health((1, 40, 0.2), (2, 30, 0.3)))
    assert routing["barely"] == [] and routing["sentence"].startswith("Every cell routes per image")
    one = tour.cell_routing_note(health((1, 1, 1.0), (2, 30, 0.3)))
    assert one["sentence"].startswith("Cell 1 barely routes: cell 1 uses 1 selection pattern,")


def test_one_rounding_for_pattern_shares():
    assert payoff.share_text(0.9998) == "99.98%"
    alarm = payoff.collapse_alarms(health((1, 2, 0.9998)))[0]["message"]
    assert "99.98%" in alarm and "100.0%" not in alarm


def test_controls_get_readable_names():
    row = {"name": "static cells (static_cells_shipped)", "kind": "static-cells", "params": 190618, "epochs": 56}
    assert payoff.readable_name(row) == "static cells, 190,618 parameters, 56 epochs"
    assert payoff.readable_name({"name": "plain CNN (x)", "kind": "plain", "params": 5, "epochs": None}) == \
        "plain CNN, 5 parameters"
    drnet = {"name": "DRNet (shipped) threshold 0.3", "kind": "drnet"}
    assert payoff.readable_name(drnet) == drnet["name"]


def test_a_budget_is_answered_from_the_recorded_sweep():
    _, meta = load_checkpoint(SHIPPED_CHECKPOINT)
    rows = payoff.recorded_sweep(meta)
    assert rows is not None and len(rows) == 36
    chosen = payoff.setting_for_budget(rows, 5.5)
    assert (chosen["tau"], chosen["threshold"]) == (meta["default_tau"], meta["default_threshold"])
    assert payoff.recorded_sweep({}) is None
    assert payoff.recorded_sweep({"validation_sweep": [{**rows[0], "accuracy": math.nan}]}) is None
    assert payoff.recorded_sweep({"validation_sweep": [{"tau": 1}]}) is None


@pytest.mark.parametrize("bad", [None, "rows", [1, 2]])
def test_a_malformed_recorded_sweep_is_ignored(bad):
    assert payoff.recorded_sweep({"validation_sweep": bad}) is None


def test_class_points_differ_in_symbol_not_only_in_colour():
    from drnet_core.figures import payoff as payoff_figures

    per_class = {name: {"n": 10, "accuracy": 0.9, "mean_mflops": 3.0} for name in FASHION_CLASSES}
    figure = payoff_figures.class_cost_error_figure(per_class, class_names=FASHION_CLASSES)
    symbols = [trace.marker.symbol for trace in figure.data]
    assert len(set(symbols)) == len(FASHION_CLASSES)


def test_the_tradeoff_curve_spreads_routed_settings_on_a_log_axis():
    from drnet_core.figures import charts as figures

    rows = [{"tau": 0.25, "threshold": h, "accuracy": 0.93, "mflops_fraction_of_dense": f}
            for h, f in ((0.0, 1.0), (0.1, 0.21), (0.3, 0.14), (0.5, 0.12))]
    figure = figures.tradeoff_figure(rows, rows[2])
    axis = figure.layout.xaxis
    assert axis.type == "log"
    low, high = axis.range
    assert low < math.log10(0.12) and high > 0.0
    assert "15%" in axis.ticktext and "100%" in axis.ticktext
