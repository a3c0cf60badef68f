"""Does another session's heavy work stall a slider step? Two real headless Chromium sessions against one
`streamlit run`, both on "Temperature & threshold".

    python -m scripts.bench_contention [--repeats 3] [--eval-limit N] [--json out.json]

Browser A steps setting B's threshold (one ArrowRight, to a value not seen before) and is timed as
`bench_browser.py` times a step: "numbers" when B's accuracy and MFLOPs show new values, "finished" when
the page's run is over. The server starts with an empty result cache of its own. Measured three ways:
  * alone: browser B idle;
  * during B's tau step: browser B steps the sidebar's tau (a new routed run of the evaluation set,
    then the threshold sweep of the curve at the new tau) and A steps `--delay` seconds later, while
    B's routed run is going;
  * during B's sweep: the same, A stepping `--sweep-delay` seconds after B, while B's sweep is going.
Target: A's numbers within 1.0 s while B steps tau.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from harness import bench_browser as bench
from harness import page_log
from harness.bench_report import seconds, spread
from harness import chromium

from drnet_app import result_cache

TARGET_S = 1.0
A_SLIDER, B_SLIDER = "Setting B: threshold", "Gumbel temperature tau"


def browser(prefix: str):
    return chromium.chromium("1500,1150", page_load_timeout=600, profile_prefix=prefix)


def start_step(driver, label: str, in_sidebar: bool) -> None:
    """One step of a slider, not waited for."""
    page_log.start_log(driver, None)
    thumb = page_log.slider_input(driver, label, in_sidebar, bench.TRADEOFF[0])
    bench.press(driver, thumb, [bench.step_key(thumb)])


def a_step(driver_a, timeout: float) -> dict:
    return bench.slider_step(driver_a, bench.TRADEOFF[0], A_SLIDER, False, bench.setting_watch("B"), timeout)


def measure(driver_a, driver_b, repeats: int, delay: float | None, timeout: float) -> dict:
    """A's threshold steps, alone (delay None) or `delay` s after B's sidebar tau step."""
    record = {"delay_s": delay, "samples": [], "failures": []}
    for _ in range(repeats):
        if delay is not None:
            start_step(driver_b, B_SLIDER, True)
            time.sleep(delay)
        bench.attempt(record, a_step, driver_a, timeout)
        if delay is not None:
            page_log.wait_finished(driver_b, "browser B's tau step", timeout * 4)
    samples = record["samples"]
    return {**record, "numbers_s": spread([s["numbers_s"] for s in samples if s["numbers_s"] is not None]),
            "finished_s": spread([s["finished_s"] for s in samples])}


def run(repeats: int, eval_limit: int | None, delay: float, sweep_delay: float, timeout: float) -> dict:
    env = {bench.EVAL_LIMIT_ENV: str(eval_limit)} if eval_limit else {}
    report = {"machine": bench.machine_facts(), "eval_limit_argument": eval_limit, "repeats": repeats,
              "a_slider": A_SLIDER, "b_slider": f"{B_SLIDER} (sidebar)", "target_s": TARGET_S}
    with tempfile.TemporaryDirectory(prefix="drnet-contention-results-") as results, \
            chromium.serve_app({**env, result_cache.DIR_ENV: results}) as (url, _), \
            browser("drnet-contention-a-") as driver_a, browser("drnet-contention-b-") as driver_b:
        for driver in (driver_a, driver_b):
            bench.cold_load(driver, url, *bench.TRADEOFF, timeout * 8)
        report.update(bench.evaluation_size(driver_a))
        report["alone"] = measure(driver_a, driver_b, repeats, None, timeout)
        report["during_tau_step"] = measure(driver_a, driver_b, repeats, delay, timeout)
        report["during_sweep"] = measure(driver_a, driver_b, repeats, sweep_delay, timeout)
    medians = [report[key]["numbers_s"]["median"] for key in ("during_tau_step", "during_sweep")
               if report[key]["numbers_s"]]
    report["target_met"] = bool(medians) and max(medians) <= TARGET_S
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval-limit", type=int, default=None, help="DRNET_EVAL_LIMIT for the server")
    parser.add_argument("--delay", type=float, default=0.3, help="s after B's tau step that A steps (its run)")
    parser.add_argument("--sweep-delay", type=float, default=3.0, help="s after B's tau step that A steps (its sweep)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = run(args.repeats, args.eval_limit, args.delay, args.sweep_delay, args.timeout)
    for key in ("alone", "during_tau_step", "during_sweep"):
        numbers, finished = report[key]["numbers_s"], report[key]["finished_s"]
        print(f"A's threshold step, {key.replace('_', ' ')}: numbers {seconds(numbers)} s, "
              f"finished {seconds(finished)} s, failures {len(report[key]['failures'])}")
    print(f"target (numbers <= {TARGET_S} s while B steps tau): {'met' if report['target_met'] else 'missed'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
