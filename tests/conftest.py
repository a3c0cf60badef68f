"""Fixtures every test module may use: a private result cache, a served app and a headless browser.

Browser test modules share one served app and one Chromium per test worker; a module sets its
`WINDOW` ("width,height") at its top, and every page evaluates `helpers.BROWSER_EVAL_LIMIT` images.
Shared plain functions are in tests/helpers.py (tiny models, fake data, the `drnet` command) and
harness/chromium.py (free ports, `settled`, `metric_values`).
"""
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
def server():
    """This worker's one `streamlit run` for every browser test module (pytest starts it on first use),
    evaluating the first `BROWSER_EVAL_LIMIT` test images.

    Shared because a server's start and first page (torch, the model, the data) cost about ten CPU
    seconds; each `browser.get` opens a new Streamlit session, so every test still starts from a fresh page."""
    with serve_app({"DRNET_EVAL_LIMIT": str(BROWSER_EVAL_LIMIT)}) as (url, _):
        yield url


@pytest.fixture(scope="session")
def chromium_driver():
    """This worker's one headless Chromium, shared by every browser test module."""
    with chromium("1280,1400", page_load_timeout=240, profile_prefix="drnet-tests-") as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(request, chromium_driver):
    """The shared Chromium on a blank page, its window set to the module's `WINDOW` ("width,height")."""
    width, height = (int(size) for size in getattr(request.module, "WINDOW", "1280,1400").split(","))
    chromium_driver.get("about:blank")
    chromium_driver.set_window_size(width, height)
    return chromium_driver
