"""Concurrent sessions each get their own results.

1. Several `AppTest` sessions in one process (so they share the cached model and every
   st.cache_data entry, as sessions of one server do), interleaved, each with its own tau,
   threshold and noise seed from the URL: every one shows exactly the numbers the core computes for
   its own settings, before and after the others ran, and the shared model is unchanged afterwards.
2. A bounded load test: a real `streamlit run` on a free loopback port and a fixed number of
   headless-chromium clients opening the Inspect page at different settings at the same time;
   every client must see its own numbers and `/_stcore/health` must answer "ok" throughout.
   Part of `make test` (DRNET_SKIP_LOAD_TEST=1 skips it); skipped without chromium and chromedriver. The server is killed
   at the end.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from chromium import AVAILABLE, MISSING_REASON, new_chromium, wait_until_stable
import torch

os.environ.setdefault("DRNET_EVAL_LIMIT", "40")

from streamlit.testing.v1 import AppTest  # noqa: E402

from drnet_core import explorer  # noqa: E402
from drnet_core.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint, sha256_of  # noqa: E402
from drnet_core.data import load_test_set  # noqa: E402
from drnet_core.images import prepare_dataset_image  # noqa: E402

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
    sys.path.insert(0, str(ROOT / "app"))
    import state  # the app's cached loaders; the same process-wide cache the sessions used

    shared, _ = state.model_and_meta(str(SHIPPED_CHECKPOINT), sha256_of(SHIPPED_CHECKPOINT))
    fresh, _ = load_checkpoint(fold_batch_norms=True)  # the app serves the inference-folded network
    assert not shared.training
    for key, value in fresh.state_dict().items():
        assert torch.equal(shared.state_dict()[key].cpu(), value), f"{key} changed while serving sessions"


# ---- bounded load test against a real server ------------------------------------------------------

CLIENTS = 4          # concurrent browsers
REQUESTS_PER_CLIENT = 2  # settings each browser opens in turn: 8 page loads in all


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health(url: str) -> str:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=10) as response:
            return response.read().decode().strip()
    except OSError as error:
        return f"unreachable: {error}"


@pytest.fixture(scope="module")
def server():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DRNET_EVAL_LIMIT": "40", "PYTHONPATH": str(ROOT)}
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while health(url) != "ok":
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"streamlit exited: {log.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("streamlit did not become healthy")
            time.sleep(0.5)
        yield url
    finally:
        process.kill()  # the load test owns this server: stop it for good
        process.wait()
        log.close()


def new_browser():
    return new_chromium("1400,1000", page_load_timeout=300, profile_prefix="drnet-load-")


def metrics_when_idle(driver, timeout: float = 600) -> dict[str, str]:
    """The main metric row once the script has finished and the page text has been stable for 2 s."""
    from selenium.webdriver.common.by import By

    text = wait_until_stable(driver, lambda driver, text: "Executed MFLOPs" in text, settle=2.0, timeout=timeout,
                             poll=0.5)
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), text[:2000]
    assert "Something went wrong" not in text and "Traceback" not in text
    values: dict[str, str] = {}
    for metric in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]'):
        label = metric.find_element(By.CSS_SELECTOR, '[data-testid="stMetricLabel"]').text.strip()
        value = metric.find_element(By.CSS_SELECTOR, '[data-testid="stMetricValue"]').text.strip()
        values.setdefault(label, value)
    return {key: values.get(key) for key in ("Executed MFLOPs", "Prediction", "Active parameters")}


def client(url: str, assignments: list[dict]) -> list[tuple[dict, dict]]:
    driver, profile = new_browser()
    seen = []
    try:
        for params in assignments:
            query = "&".join(f"{key}={value}" for key, value in params.items())
            driver.get(f"{url}/inspect?{query}")
            seen.append((params, metrics_when_idle(driver)))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return seen


@pytest.mark.skipif(os.environ.get("DRNET_SKIP_LOAD_TEST") == "1",
                    reason="DRNET_SKIP_LOAD_TEST=1 (starts a server and four browsers: about 1.5 minutes on 2 free cores)")
@pytest.mark.skipif(not AVAILABLE,
                    reason=MISSING_REASON)
def test_load_many_browsers_each_see_their_own_numbers(server, reference):
    assignments = [[SESSIONS[(c + r * CLIENTS) % len(SESSIONS)] for r in range(REQUESTS_PER_CLIENT)]
                   for c in range(CLIENTS)]
    health_log: list[str] = []
    stop = threading.Event()

    def watch_health():
        while not stop.is_set():
            health_log.append(health(server))
            stop.wait(1.0)

    watcher = threading.Thread(target=watch_health, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            results = list(pool.map(lambda a: client(server, a), assignments))
    finally:
        stop.set()
        watcher.join(timeout=30)

    seen = [pair for per_client in results for pair in per_client]
    assert len(seen) == CLIENTS * REQUESTS_PER_CLIENT  # bounded: exactly this many page loads
    for params, values in seen:
        assert values == reference(params), f"settings {params} showed {values}"
    assert health_log and all(status == "ok" for status in health_log), set(health_log)
    assert health(server) == "ok"
