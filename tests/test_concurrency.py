"""Concurrent sessions each get their own results.

Several `AppTest` sessions in one process (so they share the cached model and every st.cache_data
entry, as sessions of one server do), interleaved, each with its own tau, threshold and noise seed from
the URL: every one shows exactly the numbers the core computes for its own settings, before and after
the others ran, and the shared model is unchanged afterwards. Many real browser sessions against one
server are the soak test's (tests/test_soak.py, harness/soak.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("DRNET_EVAL_LIMIT", "40")

from streamlit.testing.v1 import AppTest  # noqa: E402

from drnet_core.analysis import explorer  # noqa: E402
from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint, sha256_of  # noqa: E402
from drnet_core.data.datasets import load_test_set  # noqa: E402
from drnet_core.data.images import prepare_dataset_image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app" / "streamlit_app.py")
TIMEOUT = 300

# Each session's own settings, as URL query parameters (the app reads them once per session).
SESSIONS = [
    {"tau": "0.1", "threshold": "0.05"},
    {"tau": "4.0", "threshold": "0.0"},
    {"tau": "4.0", "threshold": "0.05", "noise": "true", "seed": "0"},
    {"tau": "4.0", "threshold": "0.05", "noise": "true", "seed": "1"},
    {"tau": "4.0", "threshold": "0.1"},
    {"tau": "4.0", "threshold": "0.1", "noise": "true", "seed": "2147483647"},
    {"tau": "4.0", "threshold": "0.5"},
    {"tau": "2.0", "threshold": "0.1", "noise": "true", "seed": "2147483647"},
]


@pytest.fixture(scope="module")
def reference():
    """The core's own numbers for the default gallery image at each session's settings."""
    model, meta = load_checkpoint()
    images = load_test_set()
    position = explorer.gallery_positions(images.labels, per_class=2)[0]
    model_input = prepare_dataset_image(images.images[position]).model_input
    classes = tuple(meta.get("class_names"))

    def expected(params: dict) -> dict[str, str]:
        noise_seed = int(params["seed"]) if params.get("noise") == "true" else None
        result = explorer.inspect_input(model, model_input, tau=float(params["tau"]),
                                        threshold=float(params["threshold"]), noise_seed=noise_seed)
        return {"Executed MFLOPs": f"{result.mflops:.3f}", "Prediction": classes[result.prediction],
                "Active parameters": f"{result.active_params:,.0f}"}

    return expected


def shown(at: AppTest) -> dict[str, str]:
    """The first metric of each label: the main result row of the Inspect page."""
    values: dict[str, str] = {}
    for metric in at.metric:
        values.setdefault(metric.label, metric.value)
    return {key: values.get(key) for key in ("Executed MFLOPs", "Prediction", "Active parameters")}


def open_session(params: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in params.items():
        at.query_params[key] = value
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def state_fingerprint(model) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def test_interleaved_app_sessions_each_see_their_own_numbers(reference):
    expected = [reference(params) for params in SESSIONS]
    # Discriminating settings: a shared or wrongly keyed result would show up as a mismatch.
    assert len({e["Executed MFLOPs"] for e in expected}) >= len(SESSIONS) // 2

    sessions = [open_session(params) for params in SESSIONS]
    for at in sessions:  # first pass: each session starts while the others hold their own state
        at.run()
        at.switch_page("views/inspect.py").run()
        assert_clean(at)
    for at, want in zip(sessions, expected):
        assert shown(at) == want
    for at, want in zip(reversed(sessions), reversed(expected)):  # second pass, reverse order: reruns
        at.run()
        assert shown(at) == want

    # One session moves its threshold; only that session's numbers change.
    moved = dict(SESSIONS[0], threshold="0.0")
    sessions[0].slider(key="threshold").set_value(0.0).run()
    assert shown(sessions[0]) == reference(moved)
    for at, want in zip(sessions[1:], expected[1:]):
        at.run()
        assert shown(at) == want
        assert float(at.slider(key="threshold").value) == pytest.approx(float(SESSIONS[sessions.index(at)]["threshold"]))

    # The shared, cached model was only read.
    from drnet_app import caches  # the same process-wide cache the sessions used
    from drnet_app.state import Checkpoint

    shared, _ = caches.model_and_meta(Checkpoint(str(SHIPPED_CHECKPOINT), sha256_of(SHIPPED_CHECKPOINT),
                                                 SHIPPED_CHECKPOINT.name))
    fresh, _ = load_checkpoint(fold_batch_norms=True)  # the app serves the inference-folded network
    assert not shared.training
    for key, value in fresh.state_dict().items():
        assert torch.equal(shared.state_dict()[key].cpu(), value), f"{key} changed while serving sessions"


# ---- bounded load test against a real server ------------------------------------------------------

CLIENTS = 4          # concurrent browsers
REQUESTS_PER_CLIENT = 2  # settings each browser opens in turn: 8 page loads in all
