"""The Start page in a real browser: it is the first page, its five tour links are the ones
`drnet_core.analysis.tour` builds, and each opens its view in the state the step states; at 1280x800 the
Inspect page shows the routing graph above the fold. Debian's headless Chromium against `streamlit run`
on the first `BROWSER_EVAL_LIMIT` test images; screenshots go to test-artifacts/. Skipped without
chromium.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from harness.chromium import AVAILABLE, MISSING_REASON, metric_values, settled

from drnet_core.analysis import tour
from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
from drnet_core.data.datasets import load_test_set
from drnet_core.analysis.evaluate import default_setting

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WINDOW = "1280,800"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not AVAILABLE, reason=MISSING_REASON)]


def expected_steps() -> list[tour.TourStep]:
    _, meta = load_checkpoint(SHIPPED_CHECKPOINT)
    images = load_test_set()
    tau, threshold = default_setting(meta)
    return tour.tour_steps(images.labels, tuple(meta["class_names"]), tau, threshold, indices=images.indices)


def test_start_here_opens_first_and_every_tour_link_opens_its_state(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server)
    text = settled(browser, showing=("Start here", "A guided tour", "Where this model really routes"))
    nav = [link.text.strip().splitlines()[-1] for link in
           browser.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavLink"]')]
    assert nav[0] == "Start here"
    assert "barely route" in text or "Every cell routes" in text
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "start-here.png"))

    steps = expected_steps()
    anchors = {anchor.text.strip(): anchor.get_attribute("href")
               for anchor in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] ol a')}
    assert list(anchors) == [step.title for step in steps]
    for step in steps:
        href = anchors[step.title]
        assert href == f"{server}/{tour.tour_link(step)}"
        browser.get(href)
        settled(browser, showing=step.expect)
        for label, value in step.metrics:
            assert value in metric_values(browser, label), (step.title, label)
        browser.save_screenshot(str(ARTIFACTS / f"tour-{step.view}-{steps.index(step) + 1}.png"))


def test_the_routing_graph_starts_above_the_fold_at_1280x800(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{server}/inspect")
    settled(browser, showing=("Routing path of",))
    graph = browser.find_element(By.CSS_SELECTOR, '.st-key-routing_graph, [class*="st-key-routing_graph"]')
    top, height = browser.execute_script("return [arguments[0].getBoundingClientRect().top, window.innerHeight];",
                                         graph)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "inspect-1280x800.png"))
    assert top < height - 200, f"the routing graph starts {top:.0f} px down a window {height} px high"
