"""The README's "Add a branch type" checklist, proved: one entry in `ops.OPS` is all a new branch type needs.

A toy op registered for the test trains in a tiny DRNet, is costed from its module, is drawn in the
routing graph in its own colour with its own legend entry, and shows in the app.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from drnet_core.net import ops
from drnet_core.net.checkpoint import load_checkpoint
from drnet_core.training.config import PRESETS
from drnet_core.net.cost import module_macs
from drnet_core.figures.routing_graph import routing_figure, routing_graph_of_cells
from drnet_core.training.train import train

from helpers import write_fake_fashion

os.environ.setdefault("DRNET_EVAL_LIMIT", "120")

TOY = "conv_1x1"
TOY_COLOR = "#d62728"


def conv_1x1(channels: int) -> nn.Module:
    return nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))


@pytest.fixture(scope="module")
def trained_with_toy(tmp_path_factory):
    """A tiny DRNet holding the toy op beside two shipped ones, trained briefly; the op stays registered."""
    patch = pytest.MonkeyPatch()
    patch.setitem(ops.OPS, TOY, ops.BranchType(conv_1x1, TOY_COLOR))
    root = tmp_path_factory.mktemp("toy")
    data = write_fake_fashion(root / "data", train=96, test=40)
    tiny = PRESETS["tiny"]
    model_config = replace(tiny.model, branches=("sep_conv_3x3", "identity", TOY))
    train_config = replace(tiny.train, val_size=16)
    meta = train(model_config, train_config, root / "toy.pt", data_dir=str(data), progress=False)
    yield root / "toy.pt", meta
    patch.undo()


def test_the_toy_op_trains_and_is_costed_from_its_module(trained_with_toy):
    path, meta = trained_with_toy
    model, _ = load_checkpoint(path)
    assert meta["epochs"] == 1 and model.config.branches[-1] == TOY
    toy = model.config.branches.index(TOY)
    for cell in model.cells:
        held = cell.branches[0][toy]
        assert bool(torch.isfinite(held[1].weight).all()) and held[1].weight.abs().sum() > 0
        expected = cell.channels * cell.channels * cell.height * cell.width  # one 1x1 convolution
        assert module_macs(held, cell.height, cell.width) == expected
        assert torch.equal(cell.branch_macs[:, toy], torch.full((len(cell.connections),), float(expected),
                                                                dtype=torch.float64))
        assert torch.equal(cell.branch_params[:, toy], torch.full((len(cell.connections),),
                                                                  float(cell.channels ** 2 + 2 * cell.channels),
                                                                  dtype=torch.float64))
    with torch.inference_mode():
        _, trace = model(torch.randn(4, 1, 28, 28), tau=1.0, threshold=0.0)
    assert float(model.mflops_per_instance(trace)[0]) == pytest.approx(model.dense_mflops())


def test_the_toy_op_has_its_own_colour_and_legend_entry(trained_with_toy):
    path, _ = trained_with_toy
    model, _ = load_checkpoint(path)
    shapes = model.architecture().routing_shape()
    figure = routing_figure(routing_graph_of_cells(model.architecture(), [np.full(shape, 0.5) for shape in shapes],
                                                   [np.ones(shape, dtype=bool) for shape in shapes]))
    legend = {trace.name: trace.marker.color for trace in figure.data if trace.showlegend is not False and trace.name}
    assert legend[TOY] == TOY_COLOR
    assert set(legend) == set(model.config.branches)
    assert len(set(legend.values())) == len(legend)  # every branch type in a colour of its own


def test_the_toy_op_shows_in_the_app(trained_with_toy):
    from streamlit.testing.v1 import AppTest

    from apptest import APP, TIMEOUT, assert_clean

    path, _ = trained_with_toy
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("views/inspect.py").run()
    at.radio(key="checkpoint_source").set_value("Upload a file").run()
    at.file_uploader(key="checkpoint_upload").upload("toy.pt", path.read_bytes()).run()
    assert_clean(at)
    assert "`toy.pt`" in "\n".join(m.value for m in at.sidebar.markdown)
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    legends = {trace.get("name"): trace.get("marker", {}).get("color") for chart in charts
               for trace in chart["data"] if trace.get("showlegend", True) and trace.get("name")}
    assert legends.get(TOY) == TOY_COLOR
    at.session_state["tab"] = "Counterfactual"  # only the open tab runs
    at.run()
    assert any(TOY in option for option in at.multiselect(key="force_off").options)
