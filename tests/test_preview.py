"""The trade-off page's preview subset and its threshold sweep, without Streamlit: the subset is fixed,
stratified by class and of the size asked; the sweep's runs equal fresh runs at every threshold."""
from __future__ import annotations

import pytest
import torch

from drnet_core.analysis import preview
from drnet_core.data.datasets import to_model_input
from drnet_core.analysis.evaluate import run_routed
from helpers import tiny_model


def test_the_preview_subset_is_fixed_and_stratified():
    labels = torch.cat([torch.full((600,), 0), torch.full((300,), 1), torch.full((100,), 2)])[torch.randperm(1000)]
    positions = preview.stratified_positions(labels, size=100)
    assert len(positions) == 100 and len(set(positions.tolist())) == 100
    assert torch.equal(positions, torch.sort(positions).values)
    assert torch.bincount(labels[positions]).tolist() == [60, 30, 10]
    assert torch.equal(positions, preview.stratified_positions(labels, size=100))
    assert torch.equal(preview.stratified_positions(labels, size=5000), torch.arange(1000))
    odd = preview.stratified_positions(labels, size=7)
    assert len(odd) == 7 and set(labels[odd].tolist()) <= {0, 1, 2}
    with pytest.raises(ValueError):
        preview.stratified_positions(labels, size=0)
    assert [preview.preview_size(n) for n in (5, 120, 2000, 10_000, 60_000)] == [0, 12, 200, 1000, 1000]


def test_the_sweep_equals_fresh_runs_at_every_threshold():
    model = tiny_model()
    generator = torch.Generator().manual_seed(3)
    inputs = to_model_input(torch.randint(0, 256, (48, 28, 28), generator=generator, dtype=torch.uint8))
    labels = torch.arange(48) % 10
    thresholds = (0.0, 0.1, 0.3, 0.5)
    start = run_routed(model, inputs, labels, tau=0.7, threshold=0.2)
    for given in (None, start):
        runs = preview.threshold_sweep_runs(model, inputs, labels, 0.7, thresholds, from_prefix=False, start=given)
        assert [run.threshold for run in runs] == list(thresholds)
        for run, threshold in zip(runs, thresholds):
            fresh = run_routed(model, inputs, labels, tau=0.7, threshold=threshold)
            assert torch.equal(run.path_masks, fresh.path_masks)
            assert torch.equal(run.predictions, fresh.predictions)
            assert torch.allclose(run.mflops, fresh.mflops)


def test_the_warmed_taus_are_one_slider_step_away_and_in_range():
    from drnet_app import tradeoff_rows

    assert tradeoff_rows.neighbouring_taus(0.25) == [0.3, 0.2]
    assert tradeoff_rows.neighbouring_taus(0.1) == [0.15]
    assert tradeoff_rows.neighbouring_taus(4.0) == [3.95]


def test_the_warmer_runs_each_task_once_and_keeps_only_the_latest():
    import threading

    from drnet_app.warmer import Warmer

    gate, done, ran = threading.Event(), threading.Event(), []
    warmer = Warmer(kept=2)
    warmer.submit(("block",), gate.wait)  # holds the thread while the queue fills
    for key in ("a", "b", "b", "c"):
        warmer.submit((key,), lambda key=key: ran.append(key))
    warmer.submit(("end",), done.set)
    gate.set()
    assert done.wait(10)
    assert ran == ["c"]  # "a" and "b" were dropped for newer tasks; "b" was asked for twice, kept once
