"""Two replicas behind nginx on loopback (deploy/replicas.py, deploy/nginx.conf.template): a browser
stays on one replica, a link gives the same numbers on either, an upload made through one is found by the
other, and the replicas share the result cache. Real Chromium through the proxy; skipped without nginx,
chromium or chromedriver.

Run: .venv/bin/python -m pytest -q tests/test_replicas.py
"""
from __future__ import annotations

import hashlib
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from harness.chromium import AVAILABLE, MISSING_REASON, free_port, metric_values, settled
from test_browser_state import query

from deploy import replicas

ROOT = Path(__file__).resolve().parent.parent

COOKIE = "drnet_replica"
UPLOADED = ROOT / "assets" / "drnet_fashion_small.pt"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not AVAILABLE, reason=MISSING_REASON),
              pytest.mark.skipif(shutil.which("nginx") is None and not Path(replicas.NGINX).exists(),
                                 reason="nginx is not installed (apt-get install nginx-light)")]


def answered_by(url: str, cookie: str | None) -> tuple[str, str | None]:
    """(replica that answered, cookie the proxy set) for one request through the proxy."""
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    request = urllib.request.Request(url + "/_stcore/health", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        ours = [value for value in response.headers.get_all("Set-Cookie") or [] if value.startswith(f"{COOKIE}=")]
        return response.headers["X-DRNet-Replica"], (ours or [None])[0]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    shared = tmp_path_factory.mktemp("shared")
    env = {"DRNET_EVAL_LIMIT": "300", "DRNET_UPLOAD_DIR": str(shared / "uploads"),
           "DRNET_RESULT_CACHE_DIR": str(shared / "results")}
    port = free_port()
    with replicas.replicas(2, port, first_replica_port=free_port(), env=env,
                                 log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield {**running, "shared": shared}


@pytest.fixture(scope="module")
def pins(served):
    """A cookie value that the proxy routes to each replica, found by asking it."""
    found = {}
    for attempt in range(64):
        replica, _ = answered_by(served["url"], f"probe{attempt}")
        found.setdefault(replica, f"probe{attempt}")
        if len(found) == 2:
            return [found[replica] for replica in sorted(found)]
    pytest.fail(f"64 cookies all went to {sorted(found)}")


def open_on(driver, served, cookie: str, path: str, showing: str | None = None) -> str:
    """Open `path` through the proxy as a browser whose cookie pins it to one replica."""
    driver.delete_all_cookies()
    driver.get(served["url"] + "/_stcore/health")
    driver.add_cookie({"name": COOKIE, "value": cookie, "path": "/"})
    driver.get(served["url"] + path)
    return settled(driver, showing)


def test_a_browser_gets_a_cookie_and_stays_on_its_replica(served, pins):
    replica, set_cookie = answered_by(served["url"], None)
    assert set_cookie and set_cookie.startswith(f"{COOKIE}=")
    cookie = set_cookie.split(";")[0].split("=", 1)[1]
    assert {answered_by(served["url"], cookie)[0] for _ in range(12)} == {replica}
    assert answered_by(served["url"], cookie)[1] is None  # set once
    assert {answered_by(served["url"], pin)[0] for pin in pins} == {url.removeprefix("http://")
                                                                   for url in served["replica_urls"]}


def test_a_link_gives_the_same_numbers_on_either_replica(served, pins, browser):
    link = "/tradeoff?tau=0.5&threshold=0.2&tau_b=1&threshold_b=0.1"
    results = served["shared"] / "results"
    shown = []
    for pin in pins:
        open_on(browser, served, pin, link, showing="Flip list")
        shown.append((metric_values(browser, "Accuracy"), metric_values(browser, "Mean MFLOPs")))
        stored = {path.name for path in results.glob("*.routed.*.pt")}
        if len(shown) == 1:
            first_stored = stored
    assert shown[0] == shown[1] and len(shown[0][0]) >= 2 and all(shown[0][0])  # settings A and B at least
    # The second replica read the first one's runs from the shared result cache instead of adding its own.
    assert first_stored and stored == first_stored


def test_an_upload_through_one_replica_is_found_by_the_other(served, pins, browser):
    from selenium.webdriver.common.by import By

    digest = hashlib.sha256(UPLOADED.read_bytes()).hexdigest()
    open_on(browser, served, pins[0], "/?checkpoint=" + "0" * 64)  # the sidebar opens on its uploader
    browser.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"] input[type="file"]').send_keys(str(UPLOADED))
    deadline = time.monotonic() + 120
    while query(browser).get("checkpoint") != [digest] and time.monotonic() < deadline:
        time.sleep(0.5)  # the file travels to its replica, which stores it and names it in the URL
    settled(browser)
    assert query(browser)["checkpoint"] == [digest]
    assert (served["shared"] / "uploads" / f"{digest}.pt").is_file()

    link = "/tradeoff?" + urllib.parse.urlencode({"checkpoint": digest, "tau": 0.5, "threshold": 0.2})
    shown = []
    for pin in pins:
        text = open_on(browser, served, pin, link, showing="Flip list")
        assert "no longer on this server" not in text and "no longer on this server" not in browser.page_source
        assert f"sha256 {digest[:12]}" in browser.page_source
        shown.append(metric_values(browser, "Accuracy"))
    assert shown[0] == shown[1] and all(shown[0])
    open_on(browser, served, pins[1], "/tradeoff?tau=0.5&threshold=0.2", showing="Flip list")
    assert metric_values(browser, "Accuracy") != shown[0]  # the upload's numbers were not the shipped model's
