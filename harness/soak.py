"""Soak the explorer in a real browser: many sessions with their own settings, for minutes, checking each
one keeps showing its own numbers while the server stays healthy and its memory levels off.

    python -m harness.soak [--sessions 10] [--minutes 3] [--eval-limit 500]
                                                      [--json out.json]

Starts the app (`harness/chromium.py::serve_app`, with DRNET_EVAL_LIMIT set to --eval-limit) and one
headless Chromium holding one tab per session; every tab is its own Streamlit session, opened with its
own setting in the URL: even sessions on the Inspect page (`/inspect?tau=…&threshold=…`), odd ones on
Temperature & threshold (`/tradeoff?tau=…&threshold=…&tau_b=…&threshold_b=…`), session k at threshold
0.05·(k+1). Inspect sessions run at tau 2.0, where the first gallery image's cost differs at each of
their thresholds, so a session showing another one's numbers is caught.

Warm-up: every tab is opened at once, then each is checked when its first run has finished (the server
computes and caches its figures meanwhile). Soak: for --minutes the
tabs are reloaded in turn, one check every --pace seconds at most (gentle on a small machine): wait
until Streamlit has finished and the text is stable, then read the page's metrics and compare them with
the figures computed here, in this process, with drnet_core:
  * Inspect: "Prediction" and "Executed MFLOPs" of `explorer.inspect_input` on the first gallery image;
  * Temperature & threshold: "Accuracy" and "Mean MFLOPs" of settings A and B (`evaluate.run_routed` and
    `summarize` on the first --eval-limit test images), in page order.
A shown number matches when it equals the expected one rounded as shown (half a unit of its last digit,
plus 1e-5 relative for floating-point differences between processes).

Meanwhile, every --sample-every seconds, `/_stcore/health` is polled and the resident memory (VmRSS) of
the server process and its children is sampled. Levels-off rule: over the soak phase (warm-up
excluded), the peak RSS of the last third is at most --rss-tolerance (default 10 %) above the peak of
the first two thirds, with at least 3 samples in each part.

Reports JSON (stdout, and --json FILE): sessions, minutes, page loads, mismatches, page errors, health
failures, RSS samples and the verdict. Exits non-zero when any check fails.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.chromium import chromium, serve_app, wait_until_stable
from harness.server_monitor import ServerMonitor, levels_off

INSPECT_TAU = 2.0  # at this tau the first gallery image's executed MFLOPs differ at thresholds 0.05, 0.15, …, 0.45
TRADEOFF_TAU, TRADEOFF_TAU_B = 2.0, 1.0
LOAD_TIMEOUT_S = 240  # a cold page on two busy cores routes the evaluation set several times
SETTLE_S = 1.0


@dataclass(frozen=True)
class Session:
    """One browser tab's page and setting; the URL is all that sets it."""

    index: int
    page: str  # "inspect" or "tradeoff"
    tau: float
    threshold: float
    tau_b: float | None = None
    threshold_b: float | None = None

    def url(self, base: str) -> str:
        if self.page == "inspect":
            return f"{base}/inspect?tau={self.tau:g}&threshold={self.threshold:g}"
        return (f"{base}/tradeoff?tau={self.tau:g}&threshold={self.threshold:g}"
                f"&tau_b={self.tau_b:g}&threshold_b={self.threshold_b:g}")


def plan_sessions(count: int) -> list[Session]:
    """Session k: threshold 0.05·(k+1) (cycling below 1 past 19 sessions, at a lower tau); pages alternate."""
    sessions = []
    for k in range(count):
        threshold = round(0.05 * (k % 19 + 1), 2)
        shift = 0.25 * (k // 19)  # past 19 sessions the thresholds repeat: a different tau keeps settings distinct
        if k % 2 == 0:
            sessions.append(Session(k, "inspect", round(INSPECT_TAU - shift, 2), threshold))
        else:
            sessions.append(Session(k, "tradeoff", round(TRADEOFF_TAU - shift, 2), threshold,
                                    TRADEOFF_TAU_B, round(min(threshold + 0.02, 1.0), 2)))
    return sessions


# ---- what each page should show, computed here ----------------------------------------------------

class ExpectedFigures:
    """The numbers each session's page should show, computed as the app computes them (shipped checkpoint)."""

    def __init__(self, eval_limit: int):
        from drnet_core.analysis import explorer
        from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, default_device, load_checkpoint
        from drnet_core.data.datasets import FASHION_CLASSES, load_test_set, to_model_input
        from drnet_core.data.images import prepare_dataset_image

        # As app/caches.py loads it: batch norms folded, on the default device.
        self.model, meta = load_checkpoint(SHIPPED_CHECKPOINT, device=default_device(), verify_sha256=True,
                                           fold_batch_norms=True)
        self.classes = tuple(meta.get("class_names", FASHION_CLASSES))
        images = load_test_set()
        first_gallery_image = explorer.gallery_positions(images.labels, per_class=2)[0]
        self.gallery_input = prepare_dataset_image(images.images[first_gallery_image]).model_input
        self.limit = max(1, min(eval_limit, len(images)))
        self.inputs = to_model_input(images.images)[:self.limit]
        self.labels = images.labels[:self.limit]
        self.dataset_name = images.subset(self.limit).name

    def for_session(self, session: Session) -> dict[str, list]:
        """Metric label -> expected values in page order (a number, or a class name for Prediction)."""
        if session.page == "inspect":
            return self._inspect(session.tau, session.threshold)
        a = self._summary(session.tau, session.threshold)
        b = self._summary(session.tau_b, session.threshold_b)
        return {"Accuracy": [a["accuracy"] * 100, b["accuracy"] * 100],  # shown as a percentage
                "Mean MFLOPs": [a["mean_mflops"], b["mean_mflops"]]}

    def _inspect(self, tau: float, threshold: float) -> dict[str, list]:
        from drnet_core.analysis import explorer

        result = explorer.inspect_input(self.model, self.gallery_input, tau=tau, threshold=threshold)
        return {"Prediction": [self.classes[result.prediction]], "Executed MFLOPs": [result.mflops]}

    def _summary(self, tau: float, threshold: float) -> dict:
        from drnet_core.analysis.evaluate import run_routed, summarize

        run = run_routed(self.model, self.inputs, self.labels, tau=tau, threshold=threshold)
        return summarize(run, self.model, self.dataset_name, self.classes)


def shown_matches(shown: str, expected) -> bool:
    """Does a metric's text show `expected`? Numbers compare as rounded to the digits shown."""
    if isinstance(expected, str):
        return shown.strip() == expected
    match = re.fullmatch(r"\s*(-?[\d,]*\.?\d+)\s*%?\s*", shown)
    if not match:
        return False
    number = match.group(1).replace(",", "")
    decimals = len(number.split(".")[1]) if "." in number else 0
    tolerance = 0.5 * 10 ** -decimals + 1e-5 * abs(expected)
    return abs(float(number) - expected) <= tolerance


# ---- the browser side -------------------------------------------------------------------------------

def metric_values(driver) -> dict[str, list[str]]:
    """Every metric on the page: label -> values in page order."""
    from selenium.webdriver.common.by import By

    values: dict[str, list[str]] = {}
    for metric in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]'):
        label = metric.find_element(By.CSS_SELECTOR, '[data-testid="stMetricLabel"]').text.strip()
        value = metric.find_element(By.CSS_SELECTOR, '[data-testid="stMetricValue"]').text.strip()
        values.setdefault(label, []).append(value)
    return values


def page_error(driver, text: str) -> str | None:
    from selenium.webdriver.common.by import By

    if driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]') or "Traceback" in text:
        return "exception shown"
    if "Something went wrong" in text or "cannot start" in text:
        return "error message shown"
    return None


def read_when_finished(driver, labels: list[str], timeout: float) -> tuple[dict[str, list[str]], str | None]:
    """(metrics, error) of the current tab once its run has finished and the labels are shown."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By

    def ready(driver, text: str) -> bool:
        return (bool(driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] h1')) and "Please wait" not in text
                and all(label in text for label in labels))

    try:
        text = wait_until_stable(driver, ready, settle=SETTLE_S, timeout=timeout)
        error = page_error(driver, text)
        if error:
            return {}, error
        for _ in range(3):  # a late redraw can replace an element between finding and reading it
            try:
                return metric_values(driver), None
            except StaleElementReferenceException:
                time.sleep(SETTLE_S)
        return {}, "metrics kept being redrawn"
    except TimeoutError:
        return {}, f"not finished within {timeout:g} s"
    except WebDriverException as error:
        return {}, f"browser: {error.msg or type(error).__name__}"


def open_url(driver, url: str) -> str | None:
    """Load a URL in the current tab: None, or what went wrong."""
    from selenium.common.exceptions import WebDriverException

    try:
        driver.get(url)  # returns once the document has loaded; the Streamlit run follows over its websocket
        return None
    except WebDriverException as error:
        return f"browser: {error.msg or type(error).__name__}"


def compare(session: Session, expected: dict[str, list], shown: dict[str, list[str]]) -> list[dict]:
    """One record per expected value the page does not show."""
    mismatches = []
    for label, values in expected.items():
        on_page = shown.get(label, [])
        for position, value in enumerate(values):
            text = on_page[position] if position < len(on_page) else None
            if text is None or not shown_matches(text, value):
                mismatches.append({"session": session.index, "page": session.page, "label": label,
                                   "position": position, "shown": text,
                                   "expected": value if isinstance(value, str) else round(value, 6)})
    return mismatches


# ---- the soak ---------------------------------------------------------------------------------------

@dataclass
class SoakRun:
    """One soak's plan, expected figures and everything it recorded, page by page."""

    plan: list[Session]
    expected: dict[int, dict[str, list]]
    log: Callable[[str], None]
    loads: dict[int, int] = field(default_factory=dict)
    mismatches: list[dict] = field(default_factory=list)
    page_errors: list[dict] = field(default_factory=list)
    check_seconds: list[float] = field(default_factory=list)

    def __post_init__(self):
        self.loads = {session.index: 0 for session in self.plan}

    def record(self, session: Session, phase: str, shown: dict[str, list[str]], error: str | None) -> None:
        if error:
            self.page_errors.append({"session": session.index, "page": session.page, "phase": phase, "error": error})
            self.log(f"session {session.index} ({session.page}): {error}")
            return
        found = compare(session, self.expected[session.index], shown)
        for mismatch in found:
            self.log(f"mismatch: {mismatch}")
        self.mismatches.extend({**mismatch, "phase": phase} for mismatch in found)

    def check(self, driver, url: str, handle: str, session: Session, phase: str, reload: bool) -> None:
        started = time.monotonic()
        driver.switch_to.window(handle)
        error = open_url(driver, session.url(url)) if reload else None
        self.loads[session.index] += reload
        shown, error = ({}, error) if error else read_when_finished(driver, list(self.expected[session.index]),
                                                                    LOAD_TIMEOUT_S)
        if phase == "soak":
            self.check_seconds.append(time.monotonic() - started)
        self.record(session, phase, shown, error)

    def warm_up(self, driver, url: str) -> list[str]:
        """Every tab opened at once, so the server computes while the browser draws; then each tab is
        checked once its run has finished. Returns the tabs' window handles, in plan order."""
        handles, not_opened = [], set()
        for session in self.plan:
            if handles:
                driver.switch_to.new_window("tab")
            handles.append(driver.current_window_handle)
            error = open_url(driver, session.url(url))
            self.loads[session.index] += 1
            if error:
                not_opened.add(session.index)
                self.record(session, "warm-up", {}, error)
        for handle, session in zip(handles, self.plan):
            if session.index not in not_opened:
                self.check(driver, url, handle, session, "warm-up", reload=False)
        return handles

    def cycle(self, driver, url: str, handles: list[str], server, minutes: float, pace: float) -> None:
        """Reload and check the sessions in turn, one at least every `pace` seconds, for `minutes`."""
        started, turn = time.monotonic(), 0
        while time.monotonic() - started < minutes * 60 and server.poll() is None:
            turn_started = time.monotonic()
            self.check(driver, url, handles[turn % len(self.plan)], self.plan[turn % len(self.plan)], "soak",
                       reload=True)
            turn += 1
            time.sleep(max(0.0, pace - (time.monotonic() - turn_started)))


def soak(sessions: int = 10, minutes: float = 3.0, eval_limit: int = 500, pace: float = 3.0,
         sample_every: float = 5.0, rss_tolerance: float = 0.10, log=None) -> dict:
    """Run the soak and return its report; `report["passed"]` says whether every check held."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    plan = plan_sessions(sessions)
    figures = ExpectedFigures(eval_limit)
    run = SoakRun(plan, {session.index: figures.for_session(session) for session in plan}, log)
    log(f"expected figures computed for {len(plan)} sessions on {figures.dataset_name}")
    with serve_app({"DRNET_EVAL_LIMIT": str(eval_limit)}) as (url, server):
        log(f"server at {url}, pid {server.pid}")
        with chromium("1400,1000", page_load_timeout=LOAD_TIMEOUT_S, profile_prefix="drnet-soak-") as driver:
            with ServerMonitor(url, server.pid, sample_every) as monitor:
                started = time.monotonic()
                handles = run.warm_up(driver, url)
                warm_up_s = time.monotonic() - started
                log(f"warm-up: {len(plan)} sessions loaded in {warm_up_s:.0f} s")
                monitor.phase = "soak"
                started = time.monotonic()
                run.cycle(driver, url, handles, server, minutes, pace)
                soak_s = time.monotonic() - started
                server_exit = server.poll()
    return soak_report(run, figures, monitor, minutes=minutes, warm_up_s=warm_up_s, soak_s=soak_s,
                       server_exit=server_exit, rss_tolerance=rss_tolerance)


def soak_report(run: SoakRun, figures: ExpectedFigures, monitor: ServerMonitor, *, minutes: float,
                warm_up_s: float, soak_s: float, server_exit: int | None, rss_tolerance: float) -> dict:
    plan, loads = run.plan, run.loads
    verdict = levels_off(monitor.samples, rss_tolerance)
    report = {
        "sessions": len(plan),
        "pages": {page: sum(s.page == page for s in plan) for page in ("inspect", "tradeoff")},
        "settings": [{"session": s.index, "page": s.page, "url": s.url(""), "expected": run.expected[s.index]}
                     for s in plan],
        "eval_limit": figures.limit,
        "minutes": minutes,
        "warm_up_s": round(warm_up_s, 1),
        "soak_s": round(soak_s, 1),
        "page_loads": sum(loads.values()),
        "soak_page_loads": sum(loads.values()) - len(plan),
        "page_loads_per_session": loads,
        "soak_check_seconds": ({"median": round(statistics.median(run.check_seconds), 2),
                                "max": round(max(run.check_seconds), 2)} if run.check_seconds else None),
        "mismatches": len(run.mismatches),
        "mismatch_details": run.mismatches,
        "page_errors": len(run.page_errors),
        "page_error_details": run.page_errors,
        "health_checks": len(monitor.samples),
        "health_failures": len(monitor.health_failures),
        "server_exit_code": server_exit,
        "rss_samples": monitor.samples,
        "rss": verdict,
    }
    report["passed"] = (not run.mismatches and not run.page_errors and not monitor.health_failures
                        and server_exit is None and verdict["levels_off"] and report["soak_page_loads"] > 0)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10, help="browser tabs, each its own Streamlit session")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the soak after the warm-up")
    parser.add_argument("--eval-limit", type=int, default=500, help="DRNET_EVAL_LIMIT for the server")
    parser.add_argument("--pace", type=float, default=3.0, help="at least this many seconds per session check")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between health/RSS samples")
    parser.add_argument("--rss-tolerance", type=float, default=0.10,
                        help="allowed RSS growth of the last third over the first two thirds' peak")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.minutes <= 0:
        parser.error("--sessions must be at least 1 and --minutes positive")

    report = {"command": " ".join(["python -m harness.soak", *(sys.argv[1:] if argv is None else argv)]),
              **soak(args.sessions, args.minutes, args.eval_limit, args.pace, args.sample_every, args.rss_tolerance)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
