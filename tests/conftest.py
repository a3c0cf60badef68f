"""Fixtures every test module may use: a private result cache, a served app and a headless browser.

Browser test modules share one served app and one Chromium per test worker; a module sets its
`WINDOW` ("width,height") at its top, and every page evaluates `helpers.BROWSER_EVAL_LIMIT` images.
Shared plain functions are in tests/helpers.py (tiny models, fake data, the `drnet` command) and
harness/chromium.py (free ports, `settled`, `metric_values`).
"""
import contextlib
import os

import pytest

from harness.chromium import chromium, serve_app
from helpers import BROWSER_EVAL_LIMIT


@pytest.fixture(autouse=True, scope="session")
def private_result_cache(tmp_path_factory):
    """The app's shared result cache (drnet_app.result_cache) in a directory of this test run's own, for
    the app under test and the servers it starts: no result from another checkout or run is served."""
    os.environ["DRNET_RESULT_CACHE_DIR"] = str(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="session")
def served_app():
    """This worker's one `streamlit run` for every browser test module, started on first use.

    Shared because a server's start and its first page (torch, the model, the data) cost more CPU than
    most tests; each `browser.get` is a new Streamlit session, so tests still start from a fresh page."""
    with contextlib.ExitStack() as stack:
        url = []
        def start() -> str:
            if not url:
                served, _ = stack.enter_context(serve_app({"DRNET_EVAL_LIMIT": str(BROWSER_EVAL_LIMIT)}))
                url.append(served)
            return url[0]
        yield start


@pytest.fixture(scope="session")
def shared_browser():
    """This worker's one headless Chromium, started on first use and reused by every browser module."""
    with contextlib.ExitStack() as stack:
        driver = []
        def start():
            if not driver:
                driver.append(stack.enter_context(chromium("1280,1400", page_load_timeout=240,
                                                           profile_prefix="drnet-tests-")))
            return driver[0]
        yield start


@pytest.fixture(scope="module")
def server(served_app):
    """The URL of the served app, evaluating the first `BROWSER_EVAL_LIMIT` test images."""
    return served_app()


@pytest.fixture(scope="module")
def browser(request, shared_browser):
    """The shared Chromium, its window set to the module's `WINDOW` ("width,height") and on a blank page."""
    driver = shared_browser()
    width, height = (int(size) for size in getattr(request.module, "WINDOW", "1280,1400").split(","))
    driver.get("about:blank")
    driver.set_window_size(width, height)
    return driver
