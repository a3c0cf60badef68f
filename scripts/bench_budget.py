"""Time the pay-off page's budget box on a fresh server, as a person waits for it in a real browser.

    python -m scripts.bench_budget [--budget 3] [--eval-limit N] [--json out.json]

Starts `streamlit run` on a free localhost port (a fresh process: nothing cached), opens the pay-off page
in headless Chromium and waits until it has finished ("page_cold_s"), then types the budget into the box
and measures until the answer ("Within <budget> MFLOPs: ...") shows ("answer_s") and until the page has
finished again ("budget_finished_s"); then clicks "Apply to the sidebar" and measures until the page has
finished with the sidebar's tau and threshold at the chosen setting ("apply_finished_s"). The browser is
polled every 50 ms.
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from harness import chromium

POLL_S = 0.05
SETTLE_S = 1.0  # idle this long after the last run: the page has finished

STATE_JS = """
const app = document.querySelector('[data-testid="stApp"]');
const alerts = Array.from(document.querySelectorAll('[data-testid="stAlert"]')).map((a) => a.innerText);
const slider = (label) => {
  const input = document.querySelector('[data-testid="stSidebar"] input[type="range"][aria-label="' + label + '"]');
  return input ? input.value : null;
};
return {running: !app || app.getAttribute('data-test-script-state') !== 'notRunning'
                 || !!document.querySelector('[data-testid="stSpinner"], [data-testid="stSkeleton"]'),
        alerts: alerts, tau: slider('Gumbel temperature tau'), threshold: slider('Selection threshold'),
        h1: (document.querySelector('[data-testid="stMain"] h1') || {}).innerText || ''};
"""


def page_state(driver) -> dict:
    return driver.execute_script(STATE_JS)


def wait_for(driver, condition, started: float, timeout: float, what: str) -> float:
    """Seconds from `started` until `condition(state)` holds."""
    while time.monotonic() - started < timeout:
        if condition(page_state(driver)):
            return time.monotonic() - started
        time.sleep(POLL_S)
    raise TimeoutError(f"waited {timeout:g} s for {what}")


def wait_finished(driver, started: float, timeout: float, condition=lambda state: True) -> float:
    """Seconds from `started` until the page ran, holds `condition`, and stayed idle for SETTLE_S."""
    idle_since = None
    while time.monotonic() - started < timeout:
        state = page_state(driver)
        if not state["running"] and state["h1"] and condition(state):
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= SETTLE_S:
                return idle_since - started
        else:
            idle_since = None
        time.sleep(POLL_S)
    raise TimeoutError(f"the page did not finish within {timeout:g} s")


def measure(url: str, budget: float, timeout: float) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with chromium.chromium("1280,1000", page_load_timeout=timeout, profile_prefix="drnet-budget-") as driver:
        started = time.monotonic()
        driver.get(f"{url}/payoff")
        report = {"page_cold_s": wait_finished(driver, started, timeout)}
        box = driver.find_element(By.CSS_SELECTOR, '.st-key-budget input')
        box.click()
        box.send_keys(f"{budget:g}")
        started = time.monotonic()
        box.send_keys(Keys.ENTER)
        answer = f"Within {budget:g} MFLOPs"
        report["answer_s"] = wait_for(driver, lambda state: any(answer in alert for alert in state["alerts"]),
                                      started, timeout, "the budget's answer")
        report["budget_finished_s"] = wait_finished(driver, started, timeout)
        text = next(alert for alert in page_state(driver)["alerts"] if answer in alert)
        chosen = re.search(r"tau ([\d.]+), threshold ([\d.]+)", text)
        report["answer"] = text
        report["collapse_warning"] = any("trips the collapse alarm" in alert for alert in page_state(driver)["alerts"])
        button = driver.find_element(By.CSS_SELECTOR, '.st-key-apply_budget button')
        started = time.monotonic()
        button.click()
        tau, threshold = (float(value) for value in chosen.groups())
        report["apply_finished_s"] = wait_finished(
            driver, started, timeout, lambda state: state["tau"] is not None
            and float(state["tau"]) == tau and float(state["threshold"]) == threshold)
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=3.0, help="mean MFLOPs typed into the box")
    parser.add_argument("--eval-limit", type=int, default=None, help="DRNET_EVAL_LIMIT for the server")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for any one step")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    env = {"DRNET_EVAL_LIMIT": str(args.eval_limit)} if args.eval_limit else {}
    with chromium.serve_app(env) as (url, _):
        report = {"budget_mflops": args.budget, "eval_limit": args.eval_limit, **measure(url, args.budget, args.timeout)}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
