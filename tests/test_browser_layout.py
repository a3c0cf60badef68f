"""Layout in a real browser at a laptop's width (1280 px): the class-mix legend clears its axis labels, the
cluster table shows every column, no metric draws an arrow for a change of zero, and the cost audit's
filters round-trip through the URL. Skipped when chromium or chromedriver is missing."""
from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlparse

import pytest
from harness.chromium import AVAILABLE, MISSING_REASON, wait_until_stable

from drnet_core.data.datasets import FASHION_CLASSES

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not AVAILABLE, reason=MISSING_REASON)]

WIDTH = 1280
WINDOW = f"{WIDTH},2400"


def visit(driver, url: str) -> str:
    """Load a page in a new session and return its text once the script has finished and it is stable."""
    from selenium.webdriver.common.by import By

    def ready(driver, text: str) -> bool:
        return bool(driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] h1')) and "Please wait" not in text

    driver.get(url)
    text = wait_until_stable(driver, ready, settle=1.5, timeout=300)
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), text[:2000]
    return text


def boxes(driver, container: str, selector: str) -> list[tuple[float, float, float, float]]:
    """(left, top, right, bottom) of every element matching `selector` inside `container`."""
    return [tuple(box) for box in driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' ' + arguments[1])].map(e => {"
        "const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; });", container, selector)]


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def zero_changes_with_an_arrow(driver) -> list[str]:
    """Metric deltas that draw an arrow although every number in them is zero."""
    found = []
    for text, arrow in driver.execute_script(
            "return [...document.querySelectorAll('[data-testid=\"stMetricDelta\"]')]"
            ".map(e => [e.textContent, e.querySelector('svg') !== null]);"):
        numbers = re.findall(r"\d+(?:\.\d+)?", text)
        if arrow and numbers and all(float(number) == 0 for number in numbers):
            found.append(text)
    return found


def test_routing_clusters_fit_a_laptop_screen(server, browser):
    visit(browser, f"{server}/clusters")
    legend = boxes(browser, ".st-key-class_mix", "g.legend")
    labels = boxes(browser, ".st-key-class_mix", "g.ytick text") + boxes(browser, ".st-key-class_mix", "g.xtick text")
    titles = boxes(browser, ".st-key-class_mix", ".g-xtitle")
    assert len(legend) == 1 and labels and titles
    assert not [label for label in labels + titles if overlap(legend[0], label)]

    table = browser.execute_script(
        "const frame = [...document.querySelectorAll('[data-testid=\"stDataFrame\"]')]"
        ".find(f => [...f.querySelectorAll('th')].some(th => th.textContent === 'dominant class'));"
        "const scroller = frame.querySelector('.dvn-scroller');"
        "return {headers: [...frame.querySelectorAll('th')].map(th => th.textContent),"
        "        scroll: scroller.scrollWidth, visible: scroller.clientWidth};")
    assert table["headers"] == ["cluster", "size", "share", "dominant class", "dominant share", "accuracy",
                                "mean MFLOPs", "distinct paths"]
    assert table["scroll"] <= table["visible"]  # no column behind a horizontal scroll
    assert not zero_changes_with_an_arrow(browser)


def test_audit_filters_round_trip_through_the_url(server, browser):
    from selenium.webdriver.common.by import By

    visit(browser, f"{server}/audit")
    ends = browser.find_elements(By.CSS_SELECTOR, '.st-key-audit_range input[type="range"]')
    low, high = float(ends[0].get_attribute("min")), float(ends[0].get_attribute("max"))
    step = float(ends[0].get_attribute("step"))
    start = round(low + (high - low) / 4, 4)  # the slider shows it on its nearest step

    bag, dress = FASHION_CLASSES.index("Bag"), FASHION_CLASSES.index("Dress")
    visit(browser, f"{server}/audit?true_classes={bag},{dress}&answers=incorrect&mflops_min={start}"
                   f"&rank_by=estimated%20ms&top=8")
    chosen = [tag.get_attribute("aria-label")
              for tag in browser.find_elements(By.CSS_SELECTOR, ".st-key-audit_classes [data-tag]")]
    assert sorted(chosen) == ["Bag", "Dress"]
    answers = [radio.is_selected() for radio in browser.find_elements(By.CSS_SELECTOR, ".st-key-answers input")]
    assert answers == [False, False, True]  # all, correct, incorrect
    ends = browser.find_elements(By.CSS_SELECTOR, '.st-key-audit_range input[type="range"]')
    assert float(ends[0].get_attribute("value")) == pytest.approx(start, abs=step)
    assert float(ends[1].get_attribute("value")) == pytest.approx(high, abs=step)
    assert [radio.is_selected() for radio in browser.find_elements(By.CSS_SELECTOR, ".st-key-rank_by input")] == \
        [False, True]
    assert not zero_changes_with_an_arrow(browser)

    label = next(label for label in browser.find_elements(By.CSS_SELECTOR, ".st-key-answers label")
                 if label.text.strip() == "correct")
    label.click()
    deadline = time.monotonic() + 120
    while "answers=correct" not in browser.current_url and time.monotonic() < deadline:
        time.sleep(0.5)
    query = parse_qs(urlparse(browser.current_url).query)
    assert query["answers"] == ["correct"]
    assert query["true_classes"] == [f"{min(bag, dress)},{max(bag, dress)}"]
    assert float(query["mflops_min"][0]) == pytest.approx(start, abs=step)
    assert query["rank_by"] == ["estimated ms"] and query["top"] == ["8"]


@pytest.mark.parametrize("page", ["payoff", "how-it-works"])
def test_no_metric_draws_an_arrow_for_no_change(server, browser, page):
    visit(browser, f"{server}/{page}")
    assert not zero_changes_with_an_arrow(browser)
