"""The page's own record of what happened, for timing a Streamlit app in a browser: a MutationObserver
installed in the page logs, with `performance.now()`, the key presses and clicks, every change of
Streamlit's script state, busy elements, the title and the watched values. Also how to find a slider
and a sidebar link on the page.
"""
from __future__ import annotations

import json
import time

# Quiet time after the script's last run before a measure counts as over: a rerun the app asks for
# itself (a fragment, st.rerun) would start within it. And how often the log is read.
SETTLE_S = 0.75
POLL_S = 0.1


# Installed once per loaded document. Every change of what matters is logged with performance.now():
# the script state, busy elements, the title, the watched values, and the key presses and clicks.
OBSERVER_JS = r"""
if (!window.__bench) {
  const bench = window.__bench = {events: [], watch: null, lastKey: null, stateChanges: 0};
  const text = (element) => element ? element.textContent.trim() : null;
  const heading = (prefix) => Array.from(document.querySelectorAll('[data-testid="stMain"] [data-testid="stMarkdown"]'))
    .find((element) => text(element).startsWith(prefix)) || null;
  const metric = (spec) => {
    const labelled = Array.from(document.querySelectorAll('[data-testid="stMetric"]'))
      .filter((m) => text(m.querySelector('[data-testid="stMetricLabel"]')) === spec.label);
    const anchor = spec.after ? heading(spec.after) : null;
    const chosen = anchor
      ? labelled.find((m) => anchor.compareDocumentPosition(m) & Node.DOCUMENT_POSITION_FOLLOWING)
      : labelled[spec.nth || 0];
    if (!chosen) return null;
    return text(chosen.querySelector('[data-testid="stMetricValue"]'));
  };
  const containing = (fragment) => {
    const found = Array.from(document.querySelectorAll('[data-testid="stMain"] [data-testid="stCaptionContainer"], '
                                                      + '[data-testid="stMain"] [data-testid="stMetricDelta"]'))
      .find((element) => text(element).includes(fragment));
    return found ? text(found) : '';
  };
  const watched = (spec) => spec.containing ? containing(spec.containing) : metric(spec);
  bench.snapshot = () => {
    const app = document.querySelector('[data-testid="stApp"]');
    const watch = bench.watch;
    return {
      state: app ? app.getAttribute('data-test-script-state') : null,
      connection: app ? app.getAttribute('data-test-connection-state') : null,
      spinning: !!document.querySelector('[data-testid="stSpinner"], [data-testid="stSkeleton"]'),
      exception: !!document.querySelector('[data-testid="stException"]'),
      h1: text(document.querySelector('[data-testid="stMain"] h1')),
      charts: document.querySelectorAll('[data-testid="stMain"] [data-testid="stPlotlyChart"]').length,
      values: watch ? watch.values.map(watched) : null,
      heading: watch && watch.heading ? text(heading(watch.heading)) : null,
      stateChanges: bench.stateChanges,
    };
  };
  bench.record = (extra) => {
    const snapshot = bench.snapshot();
    const key = JSON.stringify(snapshot);
    if (extra || key !== bench.lastKey) {
      bench.events.push(Object.assign({t: performance.now()}, snapshot, extra || {}));
      bench.lastKey = key;
    }
  };
  new MutationObserver((records) => {
    // Count every script-state change, so that a run too short to be seen in a snapshot still counts.
    bench.stateChanges += records.filter((r) => r.type === 'attributes').length;
    bench.record();
  }).observe(document.documentElement, {subtree: true, childList: true, characterData: true, attributes: true,
                                         attributeFilter: ['data-test-script-state']});
  document.addEventListener('keydown', (e) => bench.record({input: 'key', key: e.key}), true);
  document.addEventListener('click', () => bench.record({input: 'click'}), true);
}
"""


class MeasureTimeout(Exception):
    """A measure did not finish within its timeout; the message says what was awaited."""


# ---- the in-page log -------------------------------------------------------------------------------

def install_observer(driver) -> None:
    driver.execute_script(OBSERVER_JS)


def start_log(driver, watch: dict | None) -> dict:
    """Watch these values from now on; empty the log and return the current snapshot."""
    install_observer(driver)
    return driver.execute_script(
        "const b = window.__bench; b.watch = arguments[0]; b.events = []; b.lastKey = null; b.record();"
        "return b.events[0];", watch)


def read_log(driver, start: int) -> tuple[list[dict], float]:
    """Events logged since index `start`, and the page's clock now."""
    return driver.execute_script("return [window.__bench.events.slice(arguments[0]), performance.now()];", start)


def is_busy(event: dict) -> bool:
    return event["state"] != "notRunning" or event["spinning"]


def wait_finished(driver, what: str, timeout: float, title: str | None = None, inputs: int = 1) -> list[dict]:
    """The log once the page has run a script after the action and has been idle for SETTLE_S.

    inputs: the key presses or clicks the action makes (all must have reached the page). title: the h1
    the finished page must show.
    """
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        new, now = read_log(driver, len(events))
        events += new
        pressed = [event for event in events if "input" in event]
        if len(pressed) < inputs:
            continue
        ran = True  # a page load: its first run may be over before the observer arrived
        if inputs:
            after = [event for event in events if event["t"] >= pressed[-1]["t"]]
            ran = after[-1]["stateChanges"] > pressed[-1]["stateChanges"] or any(map(is_busy, after))
        last = events[-1]
        if (ran and not is_busy(last) and now - last["t"] >= SETTLE_S * 1000
                and (title is None or title in (last["h1"] or ""))):
            return events
    raise MeasureTimeout(f"{what}: no finished run within {timeout:g} s "
                         f"(last state {events[-1]['state'] if events else 'unknown'!r})")


def finish_time(events: list[dict]) -> float:
    """Page time (ms) at which the last busy period ended."""
    last_busy = max(index for index, event in enumerate(events) if is_busy(event) or "input" in event)
    return events[min(last_busy + 1, len(events) - 1)]["t"]


def first_change(events: list[dict], since: float, before: list) -> float | None:
    """Page time (ms) at which every watched value was present and one differed from `before`."""
    for event in events:
        values = event["values"]
        if event["t"] >= since and values and None not in values and values != before:
            return event["t"]
    return None


# ---- finding things on the page -------------------------------------------------------------------

def slider_input(driver, label: str, in_sidebar: bool, page: str):
    """The keyboard-focusable element of the slider labelled `label`, or a LookupError naming it."""
    from selenium.webdriver.common.by import By

    scope = '[data-testid="stSidebar"] ' if in_sidebar else '[data-testid="stMain"] '
    quoted = json.dumps(label)
    for selector in (f'input[type="range"][aria-label={quoted}]', f'[role="slider"][aria-label={quoted}]'):
        found = driver.find_elements(By.CSS_SELECTOR, scope + selector)
        if found:
            return found[0]
    # Fall back to the widget whose visible label is `label`.
    for slider in driver.find_elements(By.CSS_SELECTOR, scope + '[data-testid="stSlider"]'):
        labels = slider.find_elements(By.CSS_SELECTOR, '[data-testid="stWidgetLabel"]')
        if labels and labels[0].text.strip() == label:
            thumbs = slider.find_elements(By.CSS_SELECTOR, 'input[type="range"], [role="slider"]')
            if thumbs:
                return thumbs[0]
    where = "sidebar" if in_sidebar else "main area"
    raise LookupError(f"no slider labelled {label!r} in the {where} of {page}")


def slider_value(element) -> str:
    return element.get_attribute("aria-valuetext") or element.get_attribute("value") or ""


def nav_link(driver, path: str, title: str):
    """The sidebar link to a page, found by its title (its visible text), else by its address."""
    from selenium.webdriver.common.by import By

    links = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavLink"]')
    for link in links:
        if link.text.strip().splitlines()[-1:] == [title]:
            return link
    for link in links + driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"] a'):
        href = (link.get_attribute("href") or "").split("?")[0].rstrip("/")
        if href.endswith(path.rstrip("/")) and (path != "/" or href.count("/") == 2):
            return link
    raise LookupError(f"no sidebar navigation link to {title!r} ({path})")


def assert_page_shows(driver, events: list[dict], title: str, page: str) -> None:
    last = events[-1]
    if last["exception"]:
        raise RuntimeError(f"{page} shows a Python exception")
    if title not in (last["h1"] or ""):
        raise LookupError(f"{page}: the title {title!r} is not on the page (its h1 reads {last['h1']!r})")
