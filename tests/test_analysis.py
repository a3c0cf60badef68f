"""The explorer's computations, called directly (no Streamlit): graphs, inspection, counterfactuals,
noise resampling, attributions, clusters, audit tables, setting comparison and figures."""
from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

from drnet_core.analysis import attribution, audit, clusters, explorer, tradeoff

from drnet_core.figures import charts as figures, routing_graph
from drnet_core.training.config import PRESETS
from drnet_core.data.datasets import FASHION_CLASSES, to_model_input
from drnet_core.analysis.evaluate import run_routed, summarize
from drnet_core.net.ops import OPS
from drnet_core.net.model import DRNet


@pytest.fixture(scope="module")
def model() -> DRNet:
    torch.manual_seed(0)
    return DRNet(PRESETS["tiny"].model).eval()


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (96, 28, 28), generator=generator, dtype=torch.uint8)
    labels = torch.arange(96) % 10
    return pixels, labels


@pytest.fixture(scope="module")
def runs(model, images):
    pixels, labels = images
    x = to_model_input(pixels)
    return (run_routed(model, x, labels, tau=1.0, threshold=0.15),
            run_routed(model, x, labels, tau=0.3, threshold=0.3))


def total_branches(model) -> int:
    return sum(c * b for c, b in model.routing_shape())


# ---- routing graph ------------------------------------------------------------------------------

def row_graph(model, run, row):
    """The routing graph of one row of a batch run: batch-level flat vectors split per cell here, in the test."""
    architecture = model.architecture()
    weights = architecture.split_per_cell(run.branch_weights[row].numpy())
    return routing_graph.routing_graph_of_cells(architecture, weights,
                                                architecture.split_per_cell(run.path_masks[row].numpy()))


def test_routing_graph_has_every_branch_with_its_attributes(model, runs):
    run, _ = runs
    graph = row_graph(model, run, 0)
    assert isinstance(graph, nx.DiGraph)
    branches = [d for _, d in graph.nodes(data=True) if d["kind"] == "branch"]
    assert len(branches) == total_branches(model)
    assert sum(d["executed"] for d in branches) == int(run.path_masks[0].sum())
    assert nx.has_path(graph, "input", "classifier")
    # Executed branch MACs plus the always-on parts give the instance's cost.
    cost = routing_graph.executed_mflops(graph) + model.always_on_macs / 1e6
    assert cost == pytest.approx(float(run.mflops[0]), rel=1e-6)


def test_routing_figure_hover_names_op_weight_and_flops(model, runs):
    run, _ = runs
    figure = routing_graph.routing_figure(row_graph(model, run, 0), "t")
    hovers = [h for trace in figure.data if trace.hovertext is not None for h in trace.hovertext]
    assert any("weight" in h and "MFLOPs" in h and "sep_conv_3x3" in h for h in hovers)
    assert figure.layout.title.text == "t"


def test_routing_figure_changes_with_the_path(model, runs):
    run_a, run_b = runs
    differs = int(torch.nonzero((run_a.path_masks != run_b.path_masks).any(dim=1))[0])
    a = routing_graph.routing_figure(row_graph(model, run_a, differs))
    b = routing_graph.routing_figure(row_graph(model, run_b, differs))
    assert a.to_json() != b.to_json()


def test_path_diff_counts_match_the_masks(model, images, runs):
    run_a, run_b = runs
    differs = int(torch.nonzero((run_a.path_masks != run_b.path_masks).any(dim=1))[0])
    x = to_model_input(images[0][differs:differs + 1])
    before = explorer.inspect_input(model, x, tau=1.0, threshold=0.15)
    after = explorer.inspect_input(model, x, tau=0.3, threshold=0.3)
    graph = routing_graph.path_diff_graph(before, after)
    counts = routing_graph.diff_counts(graph)
    a, b = run_a.path_masks[differs].numpy(), run_b.path_masks[differs].numpy()
    assert counts == {"both": int((a & b).sum()), "only A": int((a & ~b).sum()), "only B": int((~a & b).sum())}
    assert counts["only A"] + counts["only B"] > 0
    weights = {k: (d["weight_a"], d["weight_b"]) for k, d in graph.nodes(data=True) if d["kind"] == "branch"}
    assert [w for w, _ in weights.values()] == pytest.approx(before.flat("weights").tolist())
    assert [w for _, w in weights.values()] == pytest.approx(after.flat("weights").tolist())
    same = routing_graph.diff_counts(routing_graph.path_diff_graph(before, before))
    assert same["only A"] == same["only B"] == 0
    routing_graph.path_diff_figure(graph)


def test_split_per_cell_rejects_a_wrong_length(model):
    with pytest.raises(ValueError, match="branches"):
        model.split_per_cell(np.zeros(total_branches(model) + 1))


# ---- single-image inspection ---------------------------------------------------------------------

def test_inspection_matches_the_batch_evaluation(model, images, runs):
    pixels, _ = images
    run, _ = runs
    result = explorer.inspect_input(model, to_model_input(pixels[:1]), tau=1.0, threshold=0.15)
    assert result.prediction == int(run.predictions[0])
    assert result.mflops == pytest.approx(float(run.mflops[0]))
    assert np.array_equal(result.flat("executed"), run.path_masks[0].numpy())
    assert np.allclose(result.flat("weights"), run.branch_weights[0].numpy())
    assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert 0 < result.fraction_of_dense <= 1


def test_inspection_rejects_a_wrong_input_shape(model):
    with pytest.raises(ValueError, match="shape"):
        explorer.inspect_input(model, torch.zeros(1, 3, 28, 28), tau=1.0, threshold=0.1)


def test_counterfactual_forces_branches_without_touching_the_model(model, images):
    x = to_model_input(images[0][:1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = explorer.inspect_input(model, x, tau=1.0, threshold=0.15)
    executed = base.flat("executed")
    off = list(np.flatnonzero(executed)[:1])
    on = list(np.flatnonzero(~executed & (np.arange(len(executed)) < 6))[:1])
    changed = explorer.inspect_input(model, x, tau=1.0, threshold=0.15,
                                     branch_overrides=explorer.branch_overrides(model, on, off))
    assert not changed.flat("executed")[off].any()
    if on:
        assert changed.flat("executed")[on].all()
    assert changed.mflops != base.mflops or not on
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_branch_overrides_refuse_contradictions(model):
    assert explorer.branch_overrides(model) is None
    with pytest.raises(ValueError, match="forced on and off"):
        explorer.branch_overrides(model, [2], [2])


def test_noise_resampling_is_seeded_and_counts_every_sample(model, images):
    x = to_model_input(images[0][:1])
    kwargs = dict(tau=1.0, threshold=0.15, samples=40, class_names=FASHION_CLASSES)
    first = explorer.noise_path_frequencies(model, x, seed=3, **kwargs)
    again = explorer.noise_path_frequencies(model, x, seed=3, **kwargs)
    other = explorer.noise_path_frequencies(model, x, seed=4, **kwargs)
    assert first["count"].sum() == 40
    assert first["share"].sum() == pytest.approx(1.0)
    assert len(first) > 1  # noise at tau 1 changes paths
    pd.testing.assert_frame_equal(first.drop(columns=["mask"]), again.drop(columns=["mask"]))
    assert first["key"].tolist() != other["key"].tolist()


def test_gumbel_softmax_demo_sharpens_as_tau_falls():
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    table = explorer.gumbel_softmax_demo(logits, np.array([0.1, 1.0, 10.0]), threshold=0.2)
    top = table[table["branch"] == 0].set_index("tau")["weight"]
    assert top[0.1] > top[1.0] > top[10.0] > 0.25
    assert table.groupby("tau")["weight"].sum().to_numpy() == pytest.approx([1, 1, 1])
    assert table[(table["tau"] == 10.0)]["selected"].sum() == 4  # flat weights all pass 0.2
    with pytest.raises(ValueError):
        explorer.gumbel_softmax_demo(logits, np.array([0.0]), threshold=0.2)


def test_connection_logits_and_noise_have_one_value_per_branch(model, images):
    result = explorer.inspect_input(model, to_model_input(images[0][:1]), tau=1.0, threshold=0.1)
    branches = len(model.cells[1].branch_names)
    assert explorer.connection_logits(result, 1, 2).shape == (branches,)
    assert explorer.connection_noise(model, 5, 1, 2).shape == (branches,)
    with pytest.raises(ValueError):
        explorer.connection_logits(result, 9, 0)
    with pytest.raises(ValueError):
        explorer.connection_logits(result, 1, len(model.cells[1].connections))


def test_gallery_takes_the_first_images_of_every_class():
    labels = torch.tensor([3, 1, 3, 1, 3, 0])
    assert explorer.gallery_positions(labels, per_class=2) == [5, 1, 3, 0, 2]


# ---- attribution ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", attribution.METHODS)
def test_attributions_are_finite_maps_that_depend_on_the_input(model, images, method):
    x = to_model_input(images[0][:2])
    first = attribution.class_attribution(model, x[:1], 0, tau=1.0, threshold=0.1, class_names=FASHION_CLASSES,
                                          method=method, steps=8)
    second = attribution.class_attribution(model, x[1:2], 0, tau=1.0, threshold=0.1, class_names=FASHION_CLASSES,
                                           method=method, steps=8)
    cost = attribution.cost_attribution(model, x[:1], tau=1.0, threshold=0.1, method=method, steps=8)
    for result in (first, second, cost):
        assert result.pixels.shape == (28, 28)
        assert np.isfinite(result.pixels).all()
    assert np.abs(first.pixels).sum() > 0
    if method == "integrated_gradients":  # a random tiny router can sit flat (dead ReLUs) at one point
        assert np.abs(cost.pixels).sum() > 0
    assert not np.allclose(first.pixels, second.pixels)
    assert 0 <= first.value <= 1 and cost.value > 0
    assert not model.training


def test_attribution_rejects_an_unknown_method(model, images):
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribution.cost_attribution(model, to_model_input(images[0][:1]), tau=1.0, threshold=0.1, method="lime")


# ---- clusters ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,metric", [("kmeans", "euclidean"), ("agglomerative", "hamming"),
                                           ("agglomerative", "jaccard")])
def test_clustering_keeps_identical_paths_together(runs, method, metric):
    run, _ = runs
    vectors = clusters.routing_vectors(run, "mask")
    result = clusters.cluster_routes(vectors, 3, method=method, metric=metric)
    assert result.labels.shape == (len(vectors),)
    assert 1 <= result.k <= 3
    _, inverse = np.unique(vectors, axis=0, return_inverse=True)
    for pattern in np.unique(inverse):
        assert len(np.unique(result.labels[inverse.ravel() == pattern])) == 1
    sizes = np.bincount(result.labels)
    assert (np.diff(sizes) <= 0).all()  # cluster 0 is the largest


def test_clustering_k_changes_the_partition():
    rng = np.random.default_rng(0)
    centres = np.eye(6)[:3]
    vectors = np.concatenate([centre + rng.normal(scale=0.05, size=(30, 6)) for centre in centres])
    two = clusters.cluster_routes(vectors, 2, method="kmeans")
    three = clusters.cluster_routes(vectors, 3, method="agglomerative", metric="euclidean")
    assert two.k == 2 and three.k == 3
    truth = np.repeat(np.arange(3), 30)
    assert clusters.adjusted_mutual_information(three.labels, truth) == pytest.approx(1.0)


def test_clustering_rejects_bad_requests(runs):
    weights = clusters.routing_vectors(runs[0], "weights")
    with pytest.raises(ValueError, match="masks"):
        clusters.cluster_routes(weights, 3, method="agglomerative", metric="jaccard")
    with pytest.raises(ValueError, match="k must"):
        clusters.cluster_routes(weights, 1)
    with pytest.raises(ValueError, match="unknown"):
        clusters.routing_vectors(runs[0], "logits")


def test_cluster_with_a_single_path_is_one_cluster():
    vectors = np.ones((10, 6), dtype=bool)
    result = clusters.cluster_routes(vectors, 4)
    assert result.k == 1 and (result.labels == 0).all()
    assert np.isfinite(clusters.embed_2d(vectors)).all()


@pytest.mark.parametrize("embedding", clusters.EMBEDDINGS)
def test_embeddings_are_finite_2d(runs, embedding):
    coords = clusters.embed_2d(clusters.routing_vectors(runs[0], "mask"), method=embedding)
    assert coords.shape == (96, 2) and np.isfinite(coords).all()


def test_cluster_tables_and_ami(model, runs):
    run, _ = runs
    vectors = clusters.routing_vectors(run, "mask")
    result = clusters.cluster_routes(vectors, 3)
    summary = clusters.cluster_summary(result, run, FASHION_CLASSES)
    assert summary["size"].sum() == 96
    mix = clusters.class_mix(result, run, FASHION_CLASSES)
    assert mix.to_numpy().sum() == 96 and mix.shape == (result.k, 10)
    weights, mask = clusters.typical_path(result, run, 0, model.architecture())
    assert [w.shape for w in weights] == [m.shape for m in mask] == model.architecture().routing_shape()
    assert all(m.dtype == bool for m in mask)
    routing_graph.routing_graph_of_cells(model.architecture(), weights, mask)
    exemplar = clusters.exemplars(result, vectors, 0, count=4)
    assert len(exemplar) <= 4 and (result.labels[exemplar] == 0).all()
    assert clusters.adjusted_mutual_information(run.labels.numpy(), run.labels.numpy()) == pytest.approx(1.0)
    assert -1 <= clusters.adjusted_mutual_information(result.labels, run.labels.numpy()) <= 1


# ---- audit and setting comparison ---------------------------------------------------------------

def test_instance_table_filters_and_csv(runs):
    run, _ = runs
    table = audit.instance_table(run, FASHION_CLASSES, indices=torch.arange(100, 196))
    assert len(table) == 96 and table["index"].iloc[0] == 100
    assert audit.costliest(table, 5)["mflops"].is_monotonic_decreasing
    only_bags = audit.filter_table(table, classes=["Bag"], correctness="all")
    assert set(only_bags["true"]) == {"Bag"}
    wrong = audit.filter_table(table, correctness="incorrect")
    assert not wrong["correct"].any()
    low = float(table["mflops"].min())
    cheap = audit.filter_table(table, mflops_range=(low, low))
    assert (cheap["mflops"] == low).all() and len(cheap) >= 1
    with pytest.raises(ValueError):
        audit.filter_table(table, correctness="maybe")
    csv = audit.to_csv(table).decode()
    assert csv.splitlines()[0] == ",".join(audit.CSV_COLUMNS)
    assert len(csv.splitlines()) == 97
    per_class = audit.cost_per_class(table)
    assert per_class["n"].sum() == 96
    by_outcome = audit.cost_by_correctness(table)
    assert by_outcome["n"].sum() == 96


def known_time_table(model):
    """A hand-made table, so the expected estimates can be computed here exactly."""
    from drnet_core.net.cost import TimeTable

    total = total_branches(model)
    return TimeTable(always_on_ms=0.5, branch_ms=torch.arange(1, total + 1, dtype=torch.float64) / 100,
                     batch=256, device="cpu")


def test_audit_estimates_time_from_the_branches_each_input_ran(model, runs):
    run, _ = runs
    times = known_time_table(model)
    table = audit.instance_table(run, FASHION_CLASSES, time_table=times)
    expected = 0.5 + run.path_masks.double() @ times.branch_ms
    assert np.allclose(table["est_ms"].to_numpy(), expected.numpy())
    assert list(table.columns).index("est_ms") == list(table.columns).index("mflops") + 1
    by_time = audit.costliest(table, 10, by="est_ms")
    assert by_time["est_ms"].is_monotonic_decreasing
    assert float(by_time["est_ms"].iloc[0]) == pytest.approx(float(expected.max()))
    assert np.allclose(audit.ms_per_mflop(table), table["est_ms"] / table["mflops"])
    header = audit.to_csv(table).decode().splitlines()[0].split(",")
    assert header[header.index("mflops") + 1] == "est_ms" and len(header) == len(audit.CSV_COLUMNS) + 1
    assert audit.cost_per_class(table)["mean est. ms"].notna().all()
    by_outcome = audit.cost_by_correctness(table)
    assert "mean est. ms" in by_outcome
    # Without a time table there is nothing to rank by time, and the error says which columns exist.
    with pytest.raises(ValueError, match="mflops"):
        audit.costliest(audit.instance_table(run, FASHION_CLASSES), 5, by="est_ms")
    with pytest.raises(ValueError):
        audit.costliest(table, 5, by="confidence")


def test_flip_list_lists_exactly_the_changed_instances(runs):
    run_a, run_b = runs
    flips = tradeoff.flip_list(run_a, run_b, FASHION_CLASSES)
    changed = ((run_a.predictions != run_b.predictions) | (run_a.path_masks != run_b.path_masks).any(dim=1))
    assert sorted(flips["position"]) == torch.nonzero(changed).squeeze(1).tolist()
    assert tradeoff.flip_list(run_a, run_a, FASHION_CLASSES).empty


def test_per_class_table_and_sweep_grid(model, runs):
    summary = summarize(runs[0], model, "random", FASHION_CLASSES)
    table = tradeoff.per_class_table(summary)
    assert table["n"].sum() == 96
    taus, thresholds = tradeoff.sweep_grid()
    assert taus[0] == 0.25 and taus[-1] == 4.0 and thresholds[0] == 0.0


# ---- figures -------------------------------------------------------------------------------------

def test_figures_build_without_nan(model, images, runs):
    run, other = runs
    summary = summarize(run, model, "random", FASHION_CLASSES)
    table = audit.instance_table(run, FASHION_CLASSES)
    built = [
        figures.probabilities_figure(run.probabilities[0].numpy(), FASHION_CLASSES, 1),
        figures.weight_heatmap(explorer.inspect_input(model, to_model_input(images[0][:1]), tau=1.0, threshold=0.15)),
        figures.flops_distribution_figure(run.mflops.numpy(), float(run.mflops[0]), model.dense_mflops()),
        figures.attribution_figure(np.random.default_rng(0).normal(size=(28, 28)), np.zeros((28, 28)), "a"),
        figures.tradeoff_figure([summary], summary, summary),
        figures.per_class_figure(tradeoff.per_class_table(summary)),
        figures.mflops_histograms({"A": run.mflops.numpy(), "B": other.mflops.numpy()}, model.dense_mflops()),
        figures.embedding_figure(np.zeros((96, 2)), run.labels.numpy(), "class", ["x"] * 96, True, "e"),
        figures.cost_per_class_figure(audit.cost_per_class(table)),
        figures.cost_vs_error_figure(table),
        figures.time_vs_flops_figure(audit.instance_table(run, FASHION_CLASSES, time_table=known_time_table(model))),
    ]
    for figure in built:
        assert figure.layout.title.text
        text = figure.to_json()
        assert "NaN" not in text and "Infinity" not in text
    assert not math.isnan(summary["mflops_cv"])


def test_gumbel_demo_marks_the_current_tau_where_the_log_axis_shows_it():
    table = explorer.gumbel_softmax_demo(np.array([2.0, 0.0, -1.0]), np.geomspace(0.05, 5.0, 20), threshold=0.2)
    figure = figures.gumbel_demo_figure(table, {name: OPS[name].color for name in ("sep_conv_3x3", "dil_conv_3x3", "identity")}, 0.2,
                                       tau=2.0)
    marker = next(shape for shape in figure.layout.shapes if shape.x0 == shape.x1)
    assert figure.layout.xaxis.type == "log" and marker.x0 == pytest.approx(np.log10(2.0))
