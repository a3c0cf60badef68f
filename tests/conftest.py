"""Fixtures every test module may use: a private result cache, a served app and a headless browser.

A browser test module sets `EVAL_LIMIT` (images each page evaluates) and `WINDOW` ("width,height") at its
top; `server` and `browser` read them. Shared plain functions are in tests/helpers.py (tiny models, fake
data, the `drnet` command) and harness/chromium.py (free ports, `settled`, `metric_values`).
"""
import os

import pytest

from harness.chromium import chromium, serve_app


@pytest.fixture(autouse=True, scope="session")
def private_result_cache(tmp_path_factory):
    """The app's shared result cache (drnet_app.result_cache) in a directory of this test run's own, for
    the app under test and the servers it starts: no result from another checkout or run is served."""
    os.environ["DRNET_RESULT_CACHE_DIR"] = str(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def server(request):
    """`streamlit run` of the app for one test module, evaluating the module's `EVAL_LIMIT` images."""
    limit = getattr(request.module, "EVAL_LIMIT", 500)
    with serve_app({"DRNET_EVAL_LIMIT": str(limit)}) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser(request):
    """A fresh headless Chromium for one test module, its window the module's `WINDOW`."""
    window = getattr(request.module, "WINDOW", "1280,1400")
    name = request.module.__name__.rpartition(".")[2]
    with chromium(window, page_load_timeout=240, profile_prefix=f"drnet-{name}-") as driver:
        yield driver
