"""Benchmark what a person waits for in the explorer: a real headless Chromium against a real `streamlit run`.

    python -m harness.bench_browser [--repeats 5] [--eval-limit N] [--json out.json]

`scripts/bench_app.py` times the computations alone; this script times the whole round trip, browser
included. It starts the app on a free localhost port (the app's own evaluation size unless --eval-limit
sets DRNET_EVAL_LIMIT) and measures, in one browser:
  * cold first load: each page's first visit after the server started (once, not repeated);
  * warm page visit: a click on a page's sidebar link, the page already visited, until the script
    has finished and the page's title shows;
  * slider step: one ArrowRight on a slider, each repeat to a setting not seen before, until the
    watched numbers show a new value ("numbers updated") and until the script has finished. Inspect
    (/): the sidebar's threshold and tau, watching the "Executed MFLOPs" and "Active parameters"
    metrics and the prediction's confidence.
    /tradeoff: setting B's threshold and tau, watching B's "Accuracy" and "Mean MFLOPs"; the sidebar
    threshold (setting A), watching A's;
  * held key: eight ArrowRight presses 50 ms apart on "Setting B: threshold", until the script has
    finished and B's numbers are those of the final setting, as a fresh load of the same link shows them.
Each repeated measure reports its samples and their median, min and max in seconds, and the targets
(numbers updated: slider step on /tradeoff <= 1.0 s, on Inspect <= 0.5 s; warm page visit < 2 s)
met or missed. A step that leaves the numbers as they were is recorded as "unchanged" and counts with
its finish time.

Timing happens inside the page: a MutationObserver records, with the page's own clock, the key press or
click, every change of Streamlit's script state (the `data-test-script-state` attribute of stApp) and
every change of the watched values, so the figures do not depend on how often this script polls.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from harness import chromium
from harness.bench_report import PAGES, print_table, spread, summarise_steps, verdicts
from harness.page_log import (SETTLE_S, MeasureTimeout, assert_page_shows, finish_time, first_change, install_observer,
                              is_busy, nav_link, slider_input, slider_value, start_log, wait_finished)

INSPECT = next(page for page in PAGES if page[0] == "/inspect")
TRADEOFF = next(page for page in PAGES if page[0] == "/tradeoff")

HELD_PRESSES, HELD_GAP_S = 8, 0.05
EVAL_LIMIT_ENV = "DRNET_EVAL_LIMIT"  # read by app/sidebar.py
# Watched values: a metric's value by its label; `after` names the bold heading ("Setting B · tau …") the
# metric row follows, `nth` which of the equally labelled metrics to take when that heading cannot be
# found. `containing`: the first caption or metric delta holding that text, "" when there is none (the
# prediction's confidence, shown as either); it changes with tau where the executed branches do not.
INSPECT_WATCH = {"values": [{"label": "Executed MFLOPs"}, {"label": "Active parameters"},
                            {"containing": "confident"}]}


def setting_watch(setting: str) -> dict:
    heading, nth = f"Setting {setting}", {"A": 0, "B": 1}[setting]
    return {"heading": heading,
            "values": [{"label": label, "after": heading, "nth": nth}
                        for label in ("Accuracy", "Mean MFLOPs")]}


SLIDER_STEPS = (
    # (measure, page, slider label, in the sidebar, watched values)
    ("tradeoff_b_threshold", TRADEOFF, "Setting B: threshold", False, setting_watch("B")),
    ("tradeoff_b_tau", TRADEOFF, "Setting B: tau", False, setting_watch("B")),
    ("tradeoff_a_threshold", TRADEOFF, "Selection threshold", True, setting_watch("A")),
    ("inspect_threshold", INSPECT, "Selection threshold", True, INSPECT_WATCH),
    ("inspect_tau", INSPECT, "Gumbel temperature tau", True, INSPECT_WATCH),
    # Last: a new tau makes /tradeoff sweep its curve again, after the numbers.
    ("tradeoff_a_tau", TRADEOFF, "Gumbel temperature tau", True, setting_watch("A")),
)

# Written into the report, so that its figures can be read without this file.
DEFINITIONS = {
    "clock": "the page's own (performance.now), from the keydown or click event; cold loads: from the request",
    "finished": "Streamlit's script state (stApp data-test-script-state) back at notRunning, no spinner or "
                f"skeleton, and nothing of that changing for {SETTLE_S} s after",
    "numbers_updated": "the first moment every watched value is on the page and one differs from before the key; "
                       "for an 'unchanged' step (no watched value changed) its finish time",
    "no_chart_disappeared": "in every sample of a slider step, the page never held fewer plotly charts after the key "
                            "than before it (every_chart_at_finish: nor when it finished)",
    "warm_visit": "click on the sidebar link until finished with the page's title as its h1 (title_s: the title alone)",
    "held_key": "final numbers: from the last keydown, the last change into the values and setting B heading "
                "that a fresh load of the final link shows; stale: the values at finish or at the end differ from those",
}

# ---- the measures ---------------------------------------------------------------------------------

def cold_load(driver, url: str, path: str, title: str, timeout: float) -> float:
    """Seconds from asking for the page (a new session) until its script has finished and its title shows."""
    started = time.time()
    driver.get(url + path)
    start_log(driver, None)
    events = wait_finished(driver, f"cold load of {path}", timeout, title=title, inputs=0)
    assert_page_shows(driver, events, title, path)
    origin = driver.execute_script("return performance.timeOrigin;")
    # Page clock + its origin gives wall time; the first run may already be over when the observer arrives.
    busy = [event for event in events if is_busy(event)]
    finished = finish_time(events) if busy else events[0]["t"]
    return (origin + finished) / 1000 - started


def warm_visit(driver, path: str, title: str, timeout: float) -> dict:
    start_log(driver, None)
    nav_link(driver, path, title).click()
    events = wait_finished(driver, f"visit of {path}", timeout, title=title)
    assert_page_shows(driver, events, title, path)
    clicked = next(event["t"] for event in events if "input" in event)
    shown = next(event["t"] for event in events if event["t"] >= clicked and title in (event["h1"] or ""))
    return {"finished_s": (finish_time(events) - clicked) / 1000, "title_s": (shown - clicked) / 1000}


def press(driver, element, keys: list[str], gap_s: float = 0.0) -> None:
    """Focus a slider thumb and type `keys`, as a keyboard user would (the range input is visually hidden)."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("arguments[0].focus();", element)
    chain = ActionChains(driver)
    for index, key in enumerate(keys):
        chain.send_keys(key)
        if gap_s and index < len(keys) - 1:
            chain.pause(gap_s)
    chain.perform()


def step_key(element) -> str:
    """ArrowRight, or ArrowLeft at the slider's top end, so that the step always reaches a new setting."""
    from selenium.webdriver.common.keys import Keys

    top, step = float(element.get_attribute("max") or "inf"), float(element.get_attribute("step") or 0)
    value = float(element.get_attribute("value") or "nan")
    return Keys.ARROW_LEFT if value + step > top + 1e-9 else Keys.ARROW_RIGHT


def slider_step(driver, page: str, label: str, in_sidebar: bool, watch: dict, timeout: float) -> dict:
    thumb = slider_input(driver, label, in_sidebar, page)
    before = start_log(driver, watch)
    missing = [spec["label"] for spec, value in zip(watch["values"], before["values"]) if value is None]
    if missing:
        under = f" under the heading {watch['heading']!r}" if "heading" in watch else ""
        raise LookupError(f"{page}: no metric labelled {' or '.join(map(repr, missing))}{under}")
    value_before = slider_value(thumb)
    press(driver, thumb, [step_key(thumb)])
    events = wait_finished(driver, f"{label!r} step on {page}", timeout)
    if events[-1]["exception"]:
        raise RuntimeError(f"{page} shows a Python exception after a step of {label!r}")
    pressed = next(event["t"] for event in events if "input" in event)
    changed = first_change(events, pressed, before["values"])
    finished = (finish_time(events) - pressed) / 1000
    during = [event["charts"] for event in events if event["t"] >= pressed]
    return {"from": value_before, "to": slider_value(slider_input(driver, label, in_sidebar, page)),
            "numbers_s": None if changed is None else (changed - pressed) / 1000, "finished_s": finished,
            # Plotly charts on the page before the key, the fewest at any moment after it, and at the end.
            "charts_before": before["charts"], "fewest_charts": min(during, default=before["charts"]),
            "charts_after": events[-1]["charts"],
            "unchanged": changed is None, "values_before": before["values"], "values_after": events[-1]["values"]}


def fresh_values(driver, url_now: str, watch: dict, title: str, timeout: float) -> dict:
    """The watched values as a new session opened at the same link shows them."""
    driver.get(url_now)
    start_log(driver, watch)
    events = wait_finished(driver, "fresh load after the held key", timeout, title=title, inputs=0)
    return events[-1]


def held_key(driver, timeout: float) -> dict:
    from selenium.webdriver.common.keys import Keys

    page, title = TRADEOFF
    label, watch = "Setting B: threshold", setting_watch("B")
    thumb = slider_input(driver, label, False, page)
    value_before = slider_value(thumb)
    start_log(driver, watch)
    press(driver, thumb, [Keys.ARROW_RIGHT] * HELD_PRESSES, gap_s=HELD_GAP_S)
    events = wait_finished(driver, f"held key on {label!r}", timeout, inputs=HELD_PRESSES)
    keys = [event["t"] for event in events if "input" in event]
    finished = finish_time(events)
    at_finish = next(event for event in events if event["t"] == finished)
    value_after = slider_value(slider_input(driver, label, False, page))
    fresh = fresh_values(driver, driver.current_url, watch, title, timeout)
    final = (fresh["values"], fresh["heading"])
    # The numbers of the final setting show from the last change into them onwards.
    shown_since = None
    for event in events:
        if (event["values"], event["heading"]) == final:
            shown_since = event["t"] if shown_since is None else shown_since
        else:
            shown_since = None
    return {"from": value_before, "to": value_after, "key_gaps_ms": [b - a for a, b in zip(keys, keys[1:])],
            "finished_after_last_key_s": (finished - keys[-1]) / 1000,
            "finished_after_first_key_s": (finished - keys[0]) / 1000,
            "final_numbers_after_last_key_s": None if shown_since is None else (shown_since - keys[-1]) / 1000,
            "stale_at_finish": (at_finish["values"], at_finish["heading"]) != final,
            "stale_at_end": (events[-1]["values"], events[-1]["heading"]) != final,
            "values_at_end": events[-1]["values"], "values_fresh": fresh["values"], "heading_fresh": fresh["heading"]}


# ---- running and reporting -----------------------------------------------------------------------

def attempt(record: dict, measure, *args) -> bool:
    """Run one sample of a measure into record["samples"]; a timeout is recorded in record["failures"]."""
    started = time.monotonic()
    try:
        record["samples"].append(measure(*args))
        return True
    except MeasureTimeout as error:
        record["failures"].append({"timed_out": True, "after_s": time.monotonic() - started, "what": str(error)})
        return False


def settle(driver, what: str, timeout: float) -> None:
    """Wait for the page to be idle after a timed-out measure; give up on the run if it never is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        install_observer(driver)
        if not is_busy(driver.execute_script("return window.__bench.snapshot();")):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the app was still busy {timeout:g} s after {what} timed out")


def go_to(driver, page: tuple[str, str], timeout: float) -> None:
    """Be on `page` with its script finished (navigating by the sidebar when elsewhere; not timed)."""
    path, title = page
    install_observer(driver)  # a page load since the last measure brings a new document
    snapshot = driver.execute_script("return window.__bench.snapshot();")
    if title not in (snapshot["h1"] or ""):
        start_log(driver, None)
        nav_link(driver, path, title).click()
        wait_finished(driver, f"going to {path}", timeout, title=title)


def machine_facts() -> dict:
    import streamlit
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "streamlit_version": streamlit.__version__, "python": sys.version.split()[0],
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def evaluation_size(driver) -> dict:
    """What the app says it evaluates on (the sidebar's "Evaluating on" line and its N input)."""
    from selenium.webdriver.common.by import By

    sidebar = driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]').text
    line = next((row for row in sidebar.splitlines() if row.startswith("Evaluating on")), None)
    count = driver.execute_script(
        "const i = Array.from(document.querySelectorAll('[data-testid=\"stSidebar\"] input[type=\"number\"]'))"
        ".find((e) => (e.getAttribute('aria-label') || '').startsWith('Evaluation images')); return i ? i.value : null;")
    return {"evaluating_on": line.split(":", 1)[1].strip() if line else None,
            "evaluation_images": int(count) if count else None}


MEASURE_GROUPS = ("warm", "tradeoff", "held", "inspect")


def run_benchmark(repeats: int = 5, eval_limit: int | None = None, timeout: float = 120.0,
                  groups: tuple[str, ...] = MEASURE_GROUPS, server_log=None) -> dict:
    """Start the app and a browser, take the cold loads and every measure of `groups`; return the report.

    Order matters for the caches: every page is loaded once first (so later visits are warm), and the
    sidebar's tau moves last, as a new tau would make /tradeoff re-sweep its curve.
    """
    env = {EVAL_LIMIT_ENV: str(eval_limit)} if eval_limit else {}
    report = {"machine": machine_facts(), "app": {"eval_limit_argument": eval_limit}, "repeats": repeats,
              "timeout_s": timeout, "settle_s": SETTLE_S, "definitions": DEFINITIONS, "measures": {}}
    measures = report["measures"]
    with chromium.serve_app(env, log=server_log) as (url, _), browser() as driver:
        # A new session per page, the server's caches filling as they go.
        report["cold_first_load_s"] = {path: cold_load(driver, url, path, title, timeout * 4) for path, title in PAGES}
        report["app"].update(evaluation_size(driver))
        if "warm" in groups:
            measures.update(warm_visits(driver, repeats, timeout))
        for name, page, label, in_sidebar, watch in SLIDER_STEPS:
            if ("tradeoff" if page == TRADEOFF else "inspect") in groups:
                measures[name] = slider_steps(driver, page, label, in_sidebar, watch, repeats, timeout)
            if name == "tradeoff_a_threshold" and "held" in groups:
                measures["held_key"] = held_keys(driver, repeats, timeout)
    report["targets"] = verdicts(measures)
    return report


def warm_visits(driver, repeats: int, timeout: float) -> dict:
    visits = {path: {"samples": [], "failures": []} for path, _ in PAGES}
    for _ in range(repeats):
        for path, title in PAGES:  # each click leaves the page before, the last one of the previous round
            if not attempt(visits[path], warm_visit, driver, path, title, timeout):
                settle(driver, f"visit of {path}", timeout * 4)
    return {f"warm_visit {path}": {**record, "finished_s": spread([s["finished_s"] for s in record["samples"]]),
                                   "title_s": spread([s["title_s"] for s in record["samples"]])}
            for path, record in visits.items()}


def slider_steps(driver, page: tuple[str, str], label: str, in_sidebar: bool, watch: dict, repeats: int,
                 timeout: float) -> dict:
    path, _ = page
    go_to(driver, page, timeout * 4)
    record = {"page": path, "slider": label, "watched": watch, "samples": [], "failures": []}
    for _ in range(repeats):
        if not attempt(record, slider_step, driver, path, label, in_sidebar, watch, timeout):
            settle(driver, f"the {label!r} step", timeout * 4)
    return summarise_steps(record)


def held_keys(driver, repeats: int, timeout: float) -> dict:
    record = {"page": TRADEOFF[0], "slider": "Setting B: threshold", "presses": HELD_PRESSES,
              "gap_s": HELD_GAP_S, "samples": [], "failures": []}
    for _ in range(repeats):
        go_to(driver, TRADEOFF, timeout * 4)
        if not attempt(record, held_key, driver, timeout):
            settle(driver, "the held key", timeout * 4)
    samples = record["samples"]
    return {**record,
            "finished_after_last_key_s": spread([s["finished_after_last_key_s"] for s in samples]),
            "final_numbers_after_last_key_s": spread([s["final_numbers_after_last_key_s"] for s in samples
                                                      if s["final_numbers_after_last_key_s"] is not None]),
            "stale_at_finish": sum(s["stale_at_finish"] for s in samples),
            "stale_at_end": sum(s["stale_at_end"] for s in samples)}


def browser():
    return chromium.chromium("1500,1150", page_load_timeout=300, profile_prefix="drnet-bench-")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eval-limit", type=int, default=None,
                        help="evaluate the first N test images (DRNET_EVAL_LIMIT); default: the app's own")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds one measure may take (cold loads: four times this)")
    parser.add_argument("--only", nargs="+", choices=MEASURE_GROUPS, default=list(MEASURE_GROUPS),
                        help="take only these groups of measures")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if not chromium.AVAILABLE:
        parser.exit(2, f"error: {chromium.MISSING_REASON}\n")
    with tempfile.TemporaryFile() as server_log:
        try:
            report = run_benchmark(args.repeats, args.eval_limit, args.timeout, tuple(args.only), server_log)
        except Exception:
            server_log.seek(0)
            tail = server_log.read().decode(errors="replace")[-3000:]
            print(f"--- the app's output, last lines ---\n{tail}", file=sys.stderr)
            raise
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
