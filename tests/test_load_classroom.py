"""A short classroom load test (harness/load_classroom.py): three sessions, one of them in Chromium, the
others over Streamlit's websocket protocol (harness/streamlit_client.py), stepping the sidebar's sliders
on "Temperature & threshold" against a real `streamlit run` for 20 seconds. Every step must finish, and
the protocol client must see what a browser sees. The figures for 1, 10 and 30 sessions are in
docs/DEPLOY.md.

Run: .venv/bin/python -m pytest -q tests/test_load_classroom.py
"""
from __future__ import annotations

import argparse
import asyncio
import random

import pytest

from harness import load_classroom
from harness.chromium import AVAILABLE, serve_app
from harness.streamlit_client import ProtocolSession

from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
from drnet_core.data.datasets import load_test_set, to_model_input
from drnet_core.analysis.evaluate import run_routed


@pytest.mark.slow
def test_a_short_class_steps_without_a_failure_and_memory_is_sampled():
    args = argparse.Namespace(browsers=1 if AVAILABLE else 0, minutes=0.33, pace=1.5, tau_every=3, eval_limit=200,
                              step_timeout=120.0, load_timeout=300.0, seed=0)
    report = load_classroom.run_class(3, args)
    assert report["failures"] == 0, report["failure_details"]
    assert report["threshold"]["steps"] >= 2 and report["tau"]["steps"] >= 1
    assert report["by_client"]["protocol"]["steps"] >= 2
    if AVAILABLE:
        assert report["by_client"]["chromium"]["steps"] >= 1
    assert 0 < report["all"]["numbers_p50_s"] <= report["all"]["finished_p95_s"]
    assert report["memory_mb"]["samples"] > 0 and report["memory_mb"]["peak"] >= report["memory_mb"]["at_start"]


@pytest.mark.slow
def test_the_protocol_client_sees_the_numbers_a_browser_would():
    labels = load_test_set().labels[:200]
    model, _ = load_checkpoint(SHIPPED_CHECKPOINT, fold_batch_norms=True)
    inputs = to_model_input(load_test_set().images[:200])
    expected = {threshold: run_routed(model, inputs, labels, tau=0.5, threshold=threshold).mflops.mean().item()
                for threshold in (0.2, 0.3)}

    async def session(url):
        async with ProtocolSession(url, page="tradeoff", query="tau=0.5&threshold=0.2") as client:
            await client.run(timeout=300)
            first = client.metrics["Mean MFLOPs"][0]
            step = await client.move_slider("Selection threshold", 0.3, timeout=300)
            return first, client.metrics["Mean MFLOPs"][0], step

    with serve_app({"DRNET_EVAL_LIMIT": "200"}) as (url, _):
        first, second, step = asyncio.run(session(url))
    assert float(first) == pytest.approx(expected[0.2], abs=6e-4)
    assert float(second) == pytest.approx(expected[0.3], abs=6e-4)
    assert 0 < step["numbers_s"] <= step["finished_s"]


def test_percentiles_interpolate_as_numpy_does():
    import numpy as np

    samples = [random.Random(1).uniform(0, 10) for _ in range(37)]
    for fraction in (0.0, 0.5, 0.95, 1.0):
        assert load_classroom.percentile(samples, fraction) == pytest.approx(np.quantile(samples, fraction))
    assert load_classroom.percentile([], 0.5) is None


def test_the_random_walk_moves_one_slider_a_step_and_stays_in_range():
    rng, tau, threshold = random.Random(0), 0.1, 0.0
    for step in range(200):
        slider, new_tau, new_threshold = load_classroom.walk(rng, tau, threshold, step, tau_every=4)
        assert slider == ("tau" if step % 4 == 3 else "threshold")
        moved = abs(new_tau - tau) if slider == "tau" else abs(new_threshold - threshold)
        assert moved in (pytest.approx(0.05), pytest.approx(0.01), 0)
        assert 0.1 <= new_tau <= 4.0 and 0.0 <= new_threshold <= 1.0
        tau, threshold = new_tau, new_threshold
