"""Numeric extremes at the core level: every slider extreme gives finite, defined results.

The tau range is read from the app's sidebar slider (app/sidebar.py) so the test follows the app;
without the app it falls back to a wide range. Both a tiny model with deliberately spread router
logits and the shipped checkpoint are exercised, on ordinary, all-black and all-white inputs.
"""
from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from drnet_core.analysis import clusters, explorer
from drnet_core.net.checkpoint import load_checkpoint
from drnet_core.data.datasets import FASHION_CLASSES, load_shipped_subset, to_model_input
from drnet_core.analysis.evaluate import run_routed, summarize
from drnet_core.net.router import sample_gumbel
from helpers import tiny_model

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 12345, 2**31 - 1)


def app_tau_range() -> tuple[float, float]:
    """(min, max) of the app's tau slider, or (0.05, 10.0) when the app is not there."""
    source = ROOT / "app" / "sidebar.py"
    if source.is_file():
        found = re.search(r'slider\(\s*"[^"]*tau[^"]*",\s*([0-9.eE+-]+),\s*([0-9.eE+-]+)', source.read_text())
        if found:
            return float(found.group(1)), float(found.group(2))
    return 0.05, 10.0


TAU_MIN, TAU_MAX = app_tau_range()
TAUS = (TAU_MIN, TAU_MAX)
THRESHOLDS = (0.0, 1.0)


@pytest.fixture(scope="module")
def models():
    shipped, _ = load_checkpoint()
    return {"tiny": tiny_model(), "shipped": shipped}


@pytest.fixture(scope="module")
def inputs():
    subset = load_shipped_subset()
    images = torch.cat([subset.images[:6],
                        torch.zeros(1, 28, 28, dtype=torch.uint8),           # all black
                        torch.full((1, 28, 28), 255, dtype=torch.uint8)])    # all white
    labels = torch.cat([subset.labels[:6], torch.tensor([0, 0])])
    return to_model_input(images), labels


def assert_finite_run(run, n: int) -> None:
    for name in ("probabilities", "mflops", "active_params", "branch_weights"):
        value = getattr(run, name)
        assert len(value) == n and bool(torch.isfinite(value).all()), f"{name} holds NaN/inf"
    assert torch.allclose(run.probabilities.sum(dim=1), torch.ones(n), atol=1e-4)
    assert bool((run.branch_weights >= 0).all() and (run.branch_weights <= 1 + 1e-6).all())
    assert bool((run.mflops > 0).all())


def assert_finite_summary(summary: dict) -> None:
    for key, value in summary.items():
        if isinstance(value, float):
            assert math.isfinite(value), f"summary[{key!r}] = {value}"
    for row in summary["per_class"].values():
        assert all(math.isfinite(v) for v in row.values())


def test_tau_range_matches_the_app():
    assert 0 < TAU_MIN < TAU_MAX


@pytest.mark.parametrize("model_name", ["tiny", "shipped"])
@pytest.mark.parametrize("tau, threshold, seed", [(t, h, s) for t, h in itertools.product(TAUS, THRESHOLDS)
                                                  for s in (None, 0, 2**31 - 1)])
def test_slider_extremes_give_finite_results(models, inputs, model_name, tau, threshold, seed):
    model = models[model_name]
    x, labels = inputs
    run = run_routed(model, x, labels, tau=tau, threshold=threshold, noise_seed=seed)
    assert_finite_run(run, len(labels))
    summary = summarize(run, model, "extremes", FASHION_CLASSES)
    assert_finite_summary(summary)
    if threshold == 0.0:  # every branch runs: the dense network
        assert bool(run.path_masks.all())
        assert summary["mean_mflops"] == pytest.approx(model.dense_mflops(), rel=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_noise_from_any_seed_is_finite(models, inputs, seed):
    model = models["shipped"]
    x, labels = inputs
    run = run_routed(model, x, labels, tau=TAU_MIN, threshold=0.5, noise_seed=seed)
    assert_finite_run(run, len(labels))
    again = run_routed(model, x, labels, tau=TAU_MIN, threshold=0.5, noise_seed=seed)
    assert torch.equal(run.path_masks, again.path_masks)  # per-request seeded noise: reproducible


@pytest.mark.parametrize("seed", SEEDS)
def test_gumbel_noise_is_finite(seed):
    noise = sample_gumbel((200_000,), seed)
    assert bool(torch.isfinite(noise).all())


def test_one_image_evaluation_set(models, inputs):
    x, labels = inputs
    for model in models.values():
        for tau, threshold in itertools.product(TAUS, THRESHOLDS):
            run = run_routed(model, x[:1], labels[:1], tau=tau, threshold=threshold, noise_seed=7)
            assert_finite_run(run, 1)
            summary = summarize(run, model, "one image", FASHION_CLASSES)
            assert_finite_summary(summary)
            assert summary["n"] == 1 and summary["mflops_cv"] == 0.0 and summary["distinct_paths"] == 1
            patterns, ids = run.path_ids()
            assert len(patterns) == 1 and ids.tolist() == [0]


@pytest.mark.parametrize("tau, threshold", list(itertools.product(TAUS, THRESHOLDS)))
def test_single_input_inspection_at_extremes(models, inputs, tau, threshold):
    x, _ = inputs
    model = models["shipped"]
    for row in range(len(x)):
        inspection = explorer.inspect_input(model, x[row:row + 1], tau=tau, threshold=threshold, noise_seed=2**31 - 1)
        assert np.isfinite(inspection.probabilities).all()
        for cell in inspection.cells:
            assert np.isfinite(cell.weights).all() and np.isfinite(cell.router_logits).all()
        assert math.isfinite(inspection.mflops) and 0 < inspection.fraction_of_dense <= 1 + 1e-9
    table = explorer.noise_path_frequencies(model, x[:1], tau=tau, threshold=threshold, samples=16, seed=2**31 - 1,
                                            class_names=FASHION_CLASSES)
    assert table["count"].sum() == 16 and np.isfinite(table["share"]).all() and np.isfinite(table["mflops"]).all()


@pytest.mark.parametrize("kind, method, metric", [("mask", "kmeans", "hamming"), ("mask", "agglomerative", "hamming"),
                                                  ("mask", "agglomerative", "jaccard"),
                                                  ("weights", "kmeans", "euclidean"),
                                                  ("weights", "agglomerative", "euclidean")])
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_more_clusters_than_distinct_paths(models, inputs, kind, method, metric, threshold):
    x, labels = inputs
    model = models["shipped"]
    run = run_routed(model, x[:5], labels[:5], tau=TAU_MAX, threshold=threshold)
    vectors = clusters.routing_vectors(run, kind)
    distinct = len(np.unique(vectors, axis=0))
    clustering = clusters.cluster_routes(vectors, k=distinct + 10, method=method, metric=metric)
    assert 1 <= clustering.k <= distinct and len(clustering.labels) == 5
    assert set(clustering.labels.tolist()) == set(range(clustering.k))
    assert math.isfinite(clusters.adjusted_mutual_information(clustering.labels, run.labels.numpy()))
    table = clusters.cluster_summary(clustering, run, FASHION_CLASSES)
    numeric = table.select_dtypes("number").to_numpy(dtype=float)
    assert np.isfinite(numeric).all() and table["size"].sum() == 5
    assert clusters.class_mix(clustering, run, FASHION_CLASSES).to_numpy().sum() == 5
    for cluster in range(clustering.k):
        weights, mask = clusters.typical_path(clustering, run, cluster, model.architecture())
        assert all(np.isfinite(w).all() for w in weights) and all(m.dtype == bool for m in mask)
        assert len(clusters.exemplars(clustering, vectors, cluster)) >= 1
    for embedding in clusters.EMBEDDINGS:
        coords = clusters.embed_2d(vectors, method=embedding)
        assert coords.shape == (5, 2) and np.isfinite(coords).all()


def test_one_image_clustering(models, inputs):
    x, labels = inputs
    run = run_routed(models["shipped"], x[:1], labels[:1], tau=TAU_MIN, threshold=1.0)
    vectors = clusters.routing_vectors(run, "mask")
    clustering = clusters.cluster_routes(vectors, k=8)
    assert clustering.k == 1 and clustering.labels.tolist() == [0]
    assert np.isfinite(clusters.embed_2d(vectors)).all()
