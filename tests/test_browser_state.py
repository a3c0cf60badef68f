"""One setting, one number, and every state in the URL, checked in a real browser.

Debian's headless Chromium against `streamlit run` on the first `BROWSER_EVAL_LIMIT` test images: the
same setting gives the same accuracy and cost on every page and in the CLI; a link restores the
checkpoint, the open tab and forced branches; the chosen gallery image survives a visit to another page.
Skipped without chromium / chromedriver.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from harness.chromium import AVAILABLE, MISSING_REASON, metric_values, settled
from helpers import BROWSER_EVAL_LIMIT

ROOT = Path(__file__).resolve().parent.parent
WINDOW = "1280,1400"
SETTING = {"tau": "0.5", "threshold": "0.2"}

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not AVAILABLE, reason=MISSING_REASON)]


def query(driver) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlparse(driver.current_url).query)


def open_page_from_sidebar(driver, title: str) -> None:
    from selenium.webdriver.common.by import By

    # A link's text is its icon's name, then its title, on separate lines.
    link = next(link for link in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavLink"]')
                if link.text.strip().splitlines()[-1:] == [title])
    link.click()
    settled(driver, showing=title)


def test_one_setting_gives_one_number_on_every_page_and_in_the_cli(server, browser):
    cli = subprocess.run([sys.executable, "-m", "drnet_core", "evaluate", "--limit", str(BROWSER_EVAL_LIMIT), "--tau",
                          SETTING["tau"], "--threshold", SETTING["threshold"], "--json"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    expected = json.loads(cli.stdout)
    accuracy, mflops = expected["accuracy"], f"{expected['mean_mflops']:.3f}"

    setting = urllib.parse.urlencode(SETTING)
    browser.get(f"{server}/tradeoff?{setting}")
    settled(browser, showing="Flip list")
    # Setting A's metrics come first on the page.
    assert metric_values(browser, "Accuracy")[0] == f"{accuracy:.2%}"
    assert metric_values(browser, "Mean MFLOPs")[0] == mflops

    browser.get(f"{server}/payoff?{setting}")
    settled(browser, showing="Collapse alarm")
    assert metric_values(browser, "Accuracy, current setting") == [f"{accuracy:.2%}"]
    assert metric_values(browser, "Mean MFLOPs") == [mflops]

    browser.get(f"{server}/audit?{setting}")
    settled(browser, showing="Cost audit")
    assert metric_values(browser, "Accuracy") == [f"{accuracy:.1%}"]
    assert metric_values(browser, "Mean MFLOPs") == [mflops]
    assert metric_values(browser, "Inputs shown") == [f"{BROWSER_EVAL_LIMIT:,}"]


def test_a_link_restores_the_checkpoint_the_tab_and_forced_branches(server, browser):
    from selenium.webdriver.common.by import By

    forced = "cell 1 · n0→n1 · identity"
    link = urllib.parse.urlencode({"checkpoint": "Earlier shipped, joint objective", "tab": "Counterfactual",
                                   "force_on": forced})
    browser.get(f"{server}/inspect?{link}")
    text = settled(browser, showing="Force on")
    assert "drnet_fashion_joint.pt" in text
    assert forced in text  # the chip of the forced branch
    before = query(browser)
    assert before["checkpoint"] == ["Earlier shipped, joint objective"] and before["force_on"] == [forced]

    tab = next(tab for tab in browser.find_elements(By.CSS_SELECTOR, '[role="tab"]') if tab.text == "Compare")
    tab.click()
    settled(browser, showing="Compare with")
    deadline = time.monotonic() + 30
    while query(browser).get("tab") != ["Compare"] and time.monotonic() < deadline:
        time.sleep(0.3)
    assert query(browser).get("tab") == ["Compare"]
    assert query(browser)["checkpoint"] == ["Earlier shipped, joint objective"]


def test_the_gallery_image_survives_a_visit_to_another_page(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{server}/inspect")
    settled(browser, showing="Gallery image")
    choice = browser.find_element(By.CSS_SELECTOR, '[data-testid="stSelectbox"] input')
    choice.click()
    choice.send_keys("Sneaker")
    choice.send_keys(Keys.ENTER)
    text = settled(browser, showing="Routing path of Sneaker")
    chosen = shown_image(text)
    assert chosen.startswith("Sneaker · test image #")

    open_page_from_sidebar(browser, "How it works")
    open_page_from_sidebar(browser, "Inspect an image")
    assert shown_image(settled(browser, showing="Routing path of")) == chosen


def shown_image(text: str) -> str:
    """The image named in the routing graph's title: "Routing path of <name>: …"."""
    line = next(line for line in text.splitlines() if "Routing path of " in line)
    return line.split("Routing path of ", 1)[1].split(":", 1)[0]
