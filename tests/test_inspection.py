"""One image's `Inspection`: its per-cell routing is the model's own trace, its arrays cannot be changed, it
survives pickling (Streamlit's `st.cache_data`) as it was, and the figures draw it with no model loaded."""
from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from drnet_app import caches
from drnet_app.state import Checkpoint
from drnet_core.analysis import explorer
from drnet_core.analysis.evaluate import run_routed
from drnet_core.figures import routing_graph
from drnet_core.inspection import CellRouting, Inspection
from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, sha256_of
from helpers import shipped_gallery_input

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shipped():
    return shipped_gallery_input(3)


def flat_trace(model, model_input, tau, threshold, noise_seed=None, branch_overrides=None):
    """The model's own flat routing vectors for one input: (weights, executed, router logits), row 0."""
    noise = model.sample_noise(1, noise_seed) if noise_seed is not None else None
    with torch.inference_mode():
        _, trace = model(model_input.to(model.device), tau=tau, threshold=threshold, gumbel_noise=noise,
                         branch_overrides=branch_overrides)
    logits = torch.cat([cell_logits.flatten(1) for cell_logits in trace.logits], dim=1)
    return (trace.branch_weights()[0].float().cpu().numpy(), trace.path_masks()[0].cpu().numpy(),
            logits[0].float().cpu().numpy())


@pytest.mark.parametrize("noise_seed", [None, 7])
def test_per_cell_routing_is_the_split_of_the_models_flat_trace(shipped, noise_seed):
    model, model_input, tau, threshold = shipped
    inspection = explorer.inspect_input(model, model_input, tau=tau, threshold=threshold, noise_seed=noise_seed)
    architecture = model.architecture()
    assert inspection.architecture == architecture
    assert [cell.shape for cell in inspection.cells] == architecture.routing_shape()
    weights, executed, logits = flat_trace(model, model_input, tau, threshold, noise_seed)
    assert 0 < executed.sum() < len(executed), "the image should run some branches and skip others"
    for name, flat in (("weights", weights), ("executed", executed), ("router_logits", logits)):
        for cell, expected in zip(inspection.cells, architecture.split_per_cell(flat)):
            assert np.array_equal(getattr(cell, name), expected), name
        assert np.array_equal(inspection.flat(name), flat), name
    assert inspection.branches_run == int(executed.sum())


def test_a_forced_branch_shows_at_its_flat_position_and_in_its_cell(shipped):
    model, model_input, tau, threshold = shipped
    base = explorer.inspect_input(model, model_input, tau=tau, threshold=threshold)
    positions = model.architecture().branch_positions()
    skipped = [i for i in np.flatnonzero(~base.flat("executed")) if positions[i][3] != "identity"]
    forced = skipped[len(skipped) // 2]
    changed = explorer.inspect_input(model, model_input, tau=tau, threshold=threshold,
                                     branch_overrides=explorer.branch_overrides(model, [forced]))
    cell, source, target, name = positions[forced]
    plan = model.architecture().cells[cell - 1]
    connection, branch = plan.connections.index((source, target)), plan.branch_names.index(name)
    assert changed.cells[cell - 1].executed[connection, branch] and changed.flat("executed")[forced]
    assert not base.cells[cell - 1].executed[connection, branch]
    assert changed.mflops > base.mflops


def all_arrays(inspection: Inspection) -> list[np.ndarray]:
    return [inspection.probabilities] + [getattr(cell, field.name) for cell in inspection.cells
                                         for field in dataclasses.fields(cell)]


def assert_read_only(inspection: Inspection) -> None:
    for array in all_arrays(inspection):
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[(0,) * array.ndim] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        inspection.prediction = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        inspection.cells[0].weights = np.zeros(1)


def test_every_array_is_read_only_and_the_callers_arrays_are_not(shipped):
    model, model_input, tau, threshold = shipped
    inspection = explorer.inspect_input(model, model_input, tau=tau, threshold=threshold)
    assert_read_only(inspection)
    weights = np.full((3, 4), 0.5)
    routing = CellRouting(weights, weights > 0, weights)
    weights[0, 0] = 0.25  # the caller's array stays its own: the routing holds a copy
    assert weights.flags.writeable and routing.weights[0, 0] == 0.5


def test_a_pickled_inspection_comes_back_equal_and_still_read_only(shipped):
    model, model_input, tau, threshold = shipped
    inspection = explorer.inspect_input(model, model_input, tau=tau, threshold=threshold, noise_seed=3)
    copy = pickle.loads(pickle.dumps(inspection))
    assert copy is not inspection and copy.architecture == inspection.architecture
    assert (copy.prediction, copy.mflops, copy.active_params, copy.dense_mflops) == \
        (inspection.prediction, inspection.mflops, inspection.active_params, inspection.dense_mflops)
    for ours, theirs in zip(all_arrays(copy), all_arrays(inspection)):
        assert np.array_equal(ours, theirs) and ours.dtype == theirs.dtype
    assert_read_only(copy)


def test_the_apps_cached_inspection_is_read_only_on_every_hit(shipped):
    model, model_input, tau, threshold = shipped
    checkpoint = Checkpoint(str(SHIPPED_CHECKPOINT), sha256_of(SHIPPED_CHECKPOINT), "shipped")
    caches.inspection.clear()
    first = caches.inspection(checkpoint, "test-inspection", model_input, tau, threshold, None)
    again = caches.inspection(checkpoint, "test-inspection", model_input, tau, threshold, None)
    assert again is not first  # st.cache_data hands out an unpickled copy per call
    assert np.array_equal(again.flat("weights"), first.flat("weights"))
    assert_read_only(first)
    assert_read_only(again)


def test_an_inspection_refuses_routing_that_does_not_fit_its_architecture(shipped):
    model, model_input, tau, threshold = shipped
    inspection = explorer.inspect_input(model, model_input, tau=tau, threshold=threshold)
    fields = dict(architecture=inspection.architecture, probabilities=inspection.probabilities,
                  prediction=inspection.prediction, mflops=inspection.mflops,
                  active_params=inspection.active_params, dense_mflops=inspection.dense_mflops)
    with pytest.raises(ValueError, match="does not fit"):
        Inspection(cells=inspection.cells[:-1], **fields)
    transposed = CellRouting(*(getattr(inspection.cells[0], name).T for name in ("weights", "executed",
                                                                                  "router_logits")))
    with pytest.raises(ValueError, match="does not fit"):
        Inspection(cells=(transposed,) + inspection.cells[1:], **fields)
    with pytest.raises(ValueError, match="one .connections, branches. shape"):
        CellRouting(np.zeros((2, 3)), np.zeros((2, 3), dtype=bool), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="quantity"):
        inspection.flat("probabilities")


def test_the_routing_graph_of_an_inspection_is_that_of_its_batch_row(shipped):
    model, model_input, tau, threshold = shipped
    inspection = explorer.inspect_input(model, model_input, tau=tau, threshold=threshold)
    run = run_routed(model, model_input, torch.zeros(1, dtype=torch.long), tau=tau, threshold=threshold)
    architecture = model.architecture()
    from_run = routing_graph.routing_graph_of_cells(architecture, architecture.split_per_cell(run.branch_weights[0]),
                                                    architecture.split_per_cell(run.path_masks[0]))
    graph = routing_graph.routing_graph(inspection)
    branches = [key for key, data in graph.nodes(data=True) if data["kind"] == "branch"]
    assert [graph.nodes[key]["executed"] for key in branches] == [from_run.nodes[key]["executed"] for key in branches]
    assert [graph.nodes[key]["weight"] for key in branches] == pytest.approx([from_run.nodes[key]["weight"]
                                                                              for key in branches])
    assert routing_graph.executed_mflops(graph) + model.always_on_macs / 1e6 == pytest.approx(inspection.mflops)


def test_the_routing_graph_refuses_per_cell_arrays_of_another_shape(shipped):
    architecture = shipped[0].architecture()
    ones = [np.ones(shape) for shape in architecture.routing_shape()]
    with pytest.raises(ValueError, match="do not fit"):
        routing_graph.routing_graph_of_cells(architecture, ones[:-1], ones[:-1])
    with pytest.raises(ValueError, match="do not fit"):
        routing_graph.routing_graph_of_cells(architecture, ones, [mask.T for mask in ones])


DRAW_WITHOUT_A_MODEL = """
import pickle, sys
from drnet_core.figures import charts, routing_graph

before, after = pickle.load(open(sys.argv[1], "rb"))
graph = routing_graph.routing_graph(before)
ran = sum(data["executed"] for _, data in graph.nodes(data=True) if data["kind"] == "branch")
routing_graph.routing_figure(graph).to_json()
counts = routing_graph.diff_counts(routing_graph.path_diff_graph(before, after))
routing_graph.path_diff_figure(routing_graph.path_diff_graph(before, after)).to_json()
charts.weight_heatmap(before).to_json()
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "torch" or name.startswith("drnet_core.net"))
print(ran, counts["both"], counts["only A"], counts["only B"], loaded)
"""


def test_the_figures_draw_an_inspection_with_no_model_loaded(shipped, tmp_path):
    model, model_input, tau, threshold = shipped
    before = explorer.inspect_input(model, model_input, tau=tau, threshold=threshold)
    ran, skipped = np.flatnonzero(before.flat("executed")), np.flatnonzero(~before.flat("executed"))
    after = explorer.inspect_input(model, model_input, tau=tau, threshold=threshold,
                                   branch_overrides=explorer.branch_overrides(model, skipped[:2].tolist(), ran[:1].tolist()))
    path = tmp_path / "inspections.pkl"
    path.write_bytes(pickle.dumps((before, after)))
    done = subprocess.run([sys.executable, "-c", DRAW_WITHOUT_A_MODEL, str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    a, b = before.flat("executed"), after.flat("executed")
    assert done.stdout.strip().split(maxsplit=4) == [str(before.branches_run), str(int((a & b).sum())),
                                                     str(int((a & ~b).sum())), str(int((~a & b).sum())), "[]"]
    assert (a & ~b).any() and (~a & b).any()
