"""The computations behind the pay-off view, the noise heatmap and the audit's CSV, called without Streamlit:
comparison rows, the comparison table's rows for a checkpoint, collapse alarms, a setting for a budget,
branch frequencies under noise, provenance columns and empty groups."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from drnet_core.analysis import audit, explorer, payoff

from drnet_core.figures import charts as figures, payoff as payoff_figures
from drnet_core.data.datasets import FASHION_CLASSES, to_model_input
from drnet_core.analysis.evaluate import run_routed, summarize, sweep
from helpers import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(5)
    pixels = torch.randint(0, 256, (80, 28, 28), generator=generator, dtype=torch.uint8)
    return to_model_input(pixels), torch.arange(80) % 10


@pytest.fixture(scope="module")
def run(model, data):
    inputs, labels = data
    return run_routed(model, inputs, labels, tau=1.0, threshold=0.2)


def test_curve_rows_follow_the_runs_and_the_control_keeps_the_costs(model, data, run):
    inputs, labels = data
    runs = [run_routed(model, inputs, labels, tau=1.0, threshold=h) for h in (0.4, 0.0, 0.2)]
    rows = payoff.drnet_curve_rows(model, runs, model_name="DRNet tiny", epochs=3)
    assert [row["mean_mflops"] for row in rows] == sorted(row["mean_mflops"] for row in rows)
    assert {row["kind"] for row in rows} == {"drnet"} and all(row["model"] == "DRNet tiny" for row in rows)
    dense = next(row for row in rows if row["threshold"] == 0.0)
    assert dense["mean_mflops"] == pytest.approx(model.dense_mflops())
    assert dense["accuracy"] == pytest.approx(float(runs[1].correct.float().mean()))
    control = payoff.random_control_row(model, inputs, run, model_name="DRNet tiny")
    # Paths permuted across instances: the same multiset of costs, so the same mean.
    assert control["kind"] == "random" and control["threshold"] == run.threshold
    assert control["mean_mflops"] == pytest.approx(float(run.mflops.mean()))


def test_the_comparison_table_applies_only_to_its_own_checkpoint(tmp_path, model):
    checkpoint = tmp_path / "assets" / "net.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"")
    config = model.config.to_dict()
    report = {"dataset": "some split", "drnets": [
        {"model": "DRNet net", "checkpoint": "assets/net.pt", "config": json.loads(json.dumps(config)),
         "default": {"tau": 1.0, "threshold": 0.05}}],
        "rows": [
            {"name": "a", "kind": "drnet", "model": "DRNet net", "tau": 1.0, "threshold": 0.05, "accuracy": 0.9,
             "mean_mflops": 2.0},
            {"name": "b", "kind": "drnet", "model": "DRNet other", "tau": 1.0, "threshold": 0.05, "accuracy": 0.8,
             "mean_mflops": 2.0},
            {"name": "c", "kind": "random", "model": "DRNet net", "tau": 1.0, "threshold": 0.05, "accuracy": 0.7,
             "mean_mflops": 2.0},
            {"name": "d", "kind": "static-cells", "tau": 1.0, "threshold": 0.0, "accuracy": 0.85, "mean_mflops": 1.5},
            {"name": "e", "kind": "plain", "tau": 1.0, "threshold": 0.0, "accuracy": 0.86, "mean_mflops": 1.6}]}
    path = tmp_path / "table.json"
    path.write_text(json.dumps(report))
    read = payoff.read_comparison_table(path)
    rows = payoff.table_rows_for(read, checkpoint, config, (1.0, 0.05), shipped=tmp_path / "x.pt", root=tmp_path)
    assert [row["name"] for row in rows] == ["a", "c", "d", "e"]
    assert [row["kind"] for row in rows] == ["drnet", "random", "static", "plain"]
    # Another file, another default or another architecture: the table was not made for it.
    assert payoff.table_rows_for(read, tmp_path / "y.pt", config, (1.0, 0.05), shipped=tmp_path / "x.pt",
                                 root=tmp_path) is None
    assert payoff.table_rows_for(read, checkpoint, config, (2.0, 0.05), shipped=tmp_path / "x.pt",
                                 root=tmp_path) is None
    assert payoff.table_rows_for(read, checkpoint, {**config, "router_hidden": 3}, (1.0, 0.05),
                                 shipped=tmp_path / "x.pt", root=tmp_path) is None
    # "shipped" names the shipped checkpoint, wherever it is.
    report["drnets"][0]["checkpoint"] = "shipped"
    assert payoff.table_rows_for(report, checkpoint, config, (1.0, 0.05), shipped=checkpoint, root=tmp_path)
    # Missing or unreadable tables are None, not an exception.
    assert payoff.read_comparison_table(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert payoff.read_comparison_table(tmp_path / "bad.json") is None
    (tmp_path / "list.json").write_text("[1, 2]")
    assert payoff.read_comparison_table(tmp_path / "list.json") is None


def test_collapse_alarms_grade_the_cells():
    health = [
        {"cell": 1, "distinct_patterns": 1, "largest_pattern_share": 1.0, "entropy_bits": 0.0, "collapsed": True},
        {"cell": 2, "distinct_patterns": 4, "largest_pattern_share": 0.7, "entropy_bits": 1.2, "collapsed": True},
        {"cell": 3, "distinct_patterns": 40, "largest_pattern_share": 0.1, "entropy_bits": 5.0, "collapsed": False}]
    alarms = payoff.collapse_alarms(health)
    assert [(alarm["cell"], alarm["level"]) for alarm in alarms] == [(1, "error"), (2, "warning")]
    assert "100.00%" in alarms[0]["message"]


def test_a_threshold_that_runs_nothing_collapses_every_cell(model, data):
    inputs, labels = data
    nothing = run_routed(model, inputs, labels, tau=1.0, threshold=1.0)
    assert not nothing.path_masks.any()
    alarms = payoff.collapse_alarms(payoff.routing_health(model, nothing))
    assert [alarm["level"] for alarm in alarms] == ["error"] * len(model.cells)


def test_setting_for_budget_stays_within_it_or_says_it_cannot(model, data):
    inputs, labels = data
    rows = sweep(model, inputs, labels, (0.5, 1.0), (0.0, 0.2, 0.4))
    cheapest = min(row["mean_mflops"] for row in rows)
    for budget in (cheapest * 1.01, model.dense_mflops() * 0.6, model.dense_mflops() * 2):
        chosen = payoff.setting_for_budget(rows, budget)
        assert chosen["meets_budget"] and chosen["mean_mflops"] <= budget
        affordable = [row for row in rows if row["mean_mflops"] <= budget]
        assert chosen["accuracy"] >= max(row["accuracy"] for row in affordable) - 1e-4 or chosen["distinct_paths"] >= 20
    too_tight = payoff.setting_for_budget(rows, cheapest / 2)
    assert not too_tight["meets_budget"] and too_tight["mean_mflops"] == cheapest
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="budget"):
            payoff.setting_for_budget(rows, bad)
    with pytest.raises(ValueError):
        payoff.setting_for_budget([], 1.0)


def test_payoff_figures_build_without_nan(model, data, run):
    inputs, labels = data
    curve = payoff.drnet_curve_rows(model, [run, run_routed(model, inputs, labels, tau=1.0, threshold=0.0)],
                                    model_name="DRNet tiny")
    controls = [payoff.random_control_row(model, inputs, run, model_name="DRNet tiny"),
                {"name": "static", "kind": "static", "tau": 1.0, "threshold": 0.0, "accuracy": 0.5,
                 "mean_mflops": 1.0, "params": 10}]
    budget = {**curve[0], "max_mflops": 3.0}
    summary = summarize(run, model, "random", FASHION_CLASSES)
    built = [payoff_figures.payoff_curve_figure({"tau 1": curve}, controls, curve[0], budget),
             payoff_figures.cost_deciles_figure(payoff.cost_against_difficulty(run)),
             payoff_figures.class_cost_error_figure(summary["per_class"]),
             payoff_figures.routing_health_figure(payoff.routing_health(model, run))]
    for figure in built:
        assert figure.layout.title.text
        text = figure.to_json()
        assert "NaN" not in text and "Infinity" not in text
    names = [trace.name for trace in built[0].data]
    assert names == ["tau 1", "static cells", "random routing", "current setting", "budget's setting"]


def test_noise_frequency_and_entropy_summarise_the_paths(model, data):
    inputs, _ = data
    table = explorer.noise_path_frequencies(model, inputs[:1], tau=1.0, threshold=0.2, samples=48, seed=1,
                                            class_names=FASHION_CLASSES)
    frequency = explorer.noise_selection_frequency(table)
    assert frequency.shape == (sum(c * b for c, b in model.routing_shape()),)
    assert ((frequency >= 0) & (frequency <= 1 + 1e-9)).all()
    # The expected number of branches that ran equals the frequencies summed.
    assert frequency.sum() == pytest.approx(float((table["share"] * table["branches"]).sum()))
    shares = table["share"].to_numpy()
    assert explorer.path_entropy_bits(table) == pytest.approx(float(-(shares * np.log2(shares)).sum()))
    one_path = pd.DataFrame({"share": [1.0], "mask": [np.ones(frequency.shape, dtype=bool)]})
    assert explorer.path_entropy_bits(one_path) == 0.0
    assert (explorer.noise_selection_frequency(one_path) == 1.0).all()
    figure = figures.selection_frequency_heatmap(model.architecture(), frequency)
    assert len(figure.data) == len(model.cells) and "NaN" not in figure.to_json()


def test_audit_csv_carries_provenance_and_skips_empty_groups(run):
    table = audit.instance_table(run, FASHION_CLASSES)
    origin = audit.provenance("ab" * 32, run, "some split, first 80")
    frame = pd.read_csv(io.BytesIO(audit.to_csv(table, origin)), keep_default_na=False)
    assert list(frame.columns) == list(audit.CSV_COLUMNS) + list(audit.PROVENANCE_COLUMNS)
    assert (frame["checkpoint_sha256"] == "ab" * 32).all() and (frame["tau"] == 1.0).all()
    assert (frame["threshold"] == 0.2).all() and (frame["noise_seed"] == "").all()
    assert (frame["dataset"] == "some split, first 80").all()
    with pytest.raises(ValueError, match="provenance"):
        audit.to_csv(table, {"tau": 1.0})
    wrong = audit.filter_table(table, correctness="incorrect")
    assert list(audit.cost_by_correctness(wrong)["outcome"]) == ["incorrect"]
    assert [trace.name.split(" ")[0] for trace in figures.cost_vs_error_figure(wrong).data] == ["incorrect"]
    assert audit.cost_by_correctness(table.iloc[:0]).empty
