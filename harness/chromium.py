"""Debian's headless Chromium for the real-browser tests, with the flags this machine needs.

Background networking, component updates and sync are off: the machine reaches only localhost, and
Chromium's own connections would otherwise be refused many at a time.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from deploy.replicas import stop, wait_healthy

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
AVAILABLE = Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()
MISSING_REASON = "chromium / chromedriver not installed (apt-get install chromium chromium-driver)"
ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app" / "streamlit_app.py"
# A cold `streamlit run` takes about 15 s on an idle 2-core machine; raise it on a machine busy with other work.
LAUNCH_TIMEOUT_S = int(os.environ.get("DRNET_TEST_LAUNCH_TIMEOUT", "240"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_app(env: dict[str, str] | None = None, log=None):
    """`streamlit run` on a free localhost port, healthy: yields (url, process); stopped on exit.

    env: variables added to this process's environment (e.g. DRNET_EVAL_LIMIT). log: a binary file for
    the server's output, by default a temporary file.
    """
    port = free_port()
    own_log = log is None
    log = tempfile.TemporaryFile() if own_log else log
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP),
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, [process], timeout=LAUNCH_TIMEOUT_S)
        yield url, process
    finally:
        stop(process)
        if own_log:
            log.close()


@contextlib.contextmanager
def chromium(window_size: str, page_load_timeout: float, profile_prefix: str):
    """A fresh headless browser with its own user-data dir, yielded as its driver; quit and removed on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix=profile_prefix)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-gpu", f"--window-size={window_size}",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(page_load_timeout)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until_stable(driver, is_ready, settle: float, timeout: float, poll: float = 0.4) -> str:
    """The page text once Streamlit has finished running and the text has not changed for `settle` s.

    `is_ready(driver, text)` says the page holds what the test waits for: until the script's first
    run arrives, the page holds only a skip link, which is stable too.
    """
    import time

    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    previous, stable_since = None, None
    while time.monotonic() < deadline:
        busy = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"], [data-testid="stSpinner"], '
                                                     '[data-testid="stSkeleton"]')
        text = driver.find_element(By.TAG_NAME, "body").text
        if not busy and text == previous and is_ready(driver, text):
            if stable_since is not None and time.monotonic() - stable_since >= settle:
                return text
            stable_since = stable_since or time.monotonic()
        else:
            stable_since = None
        previous = text
        time.sleep(poll)
    raise TimeoutError("the app did not finish running")


def settled(driver, showing: str | tuple[str, ...] | None = (), timeout: float = 600) -> str:
    """Page text once Streamlit's script has finished and the view (every view has a title) is stable,
    with no exception on the page.

    `showing`: text the rerun an action triggered will put on the page. On a busy machine that rerun can
    start after the old page already looked settled, so stability alone is not enough.
    """
    from selenium.webdriver.common.by import By

    needles = (showing,) if isinstance(showing, str) else tuple(showing or ())

    def ready(driver, text: str) -> bool:
        failed = "Something went wrong" in text or driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        return bool(failed) or (bool(driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] h1'))
                                and "Please wait" not in text and all(needle in text for needle in needles))

    text = wait_until_stable(driver, ready, settle=1.5, timeout=timeout)
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), text[:2000]
    assert "Something went wrong" not in text and "Traceback" not in text, text[:2000]
    return text


def metric_values(driver, label: str) -> list[str]:
    """The values of every metric on the page with this label."""
    from selenium.webdriver.common.by import By

    return [metric.find_element(By.CSS_SELECTOR, '[data-testid="stMetricValue"]').text
            for metric in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')
            if metric.find_element(By.CSS_SELECTOR, '[data-testid="stMetricLabel"]').text.strip() == label]
