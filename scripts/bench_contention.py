"""Does another session's heavy work stall a slider step? Browser A (headless Chromium) and session B, both
on "Temperature & threshold" of one `streamlit run` (or of two replicas, `--replicas 2`).

    python -m scripts.bench_contention [--repeats 3] [--eval-limit N] [--replicas 2] [--b-client protocol]
                                       [--json out.json]

Browser A steps setting B's threshold (one ArrowRight, to a value not seen before) and is timed as
`bench_browser.py` times a step: "numbers" when B's accuracy and MFLOPs show new values, "finished" when
the page's run is over. The server starts with an empty result cache of its own. Measured three ways:
  * alone: browser B idle;
  * during B's tau step: browser B steps the sidebar's tau (a new routed run of the evaluation set,
    then the threshold sweep of the curve at the new tau) and A steps `--delay` seconds later, while
    B's routed run is going;
  * during B's sweep: the same, A stepping `--sweep-delay` seconds after B, while B's sweep is going.
Target: A's numbers within 1.0 s while B steps tau. With `--replicas 2` the same runs against two replicas
on this machine (`deploy/replicas.py`, each pinned to its share of the cores, one result cache), browser
A on one and browser B on the other, as the proxy's sticky sessions would place two students. With
`--b-client protocol` session B speaks Streamlit's websocket protocol (harness/streamlit_client.py): the
server does all of B's work, but B's pages are not drawn on this machine's cores, as they are not on a
server whose students' browsers run on their own laptops.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import threading
import time
from pathlib import Path

from harness import bench_browser as bench
from harness import chromium, page_log
from harness.bench_report import seconds, spread
from harness.load_classroom import DEFAULT_TAU
from harness.streamlit_client import ProtocolSession

from deploy import replicas as deploy_replicas
from drnet_app import result_cache

TARGET_S = 1.0
A_SLIDER, B_SLIDER = "Setting B: threshold", "Gumbel temperature tau"


def browser(prefix: str):
    return chromium.chromium("1500,1150", page_load_timeout=600, profile_prefix=prefix)


class ChromiumB:
    """Session B in its own headless Chromium, stepping the sidebar's tau with one ArrowRight."""

    def __init__(self, driver, url: str, timeout: float):
        self.driver, self.timeout = driver, timeout
        bench.cold_load(driver, url, *bench.TRADEOFF, timeout * 8)

    def start_tau_step(self) -> None:
        page_log.start_log(self.driver, None)
        thumb = page_log.slider_input(self.driver, B_SLIDER, True, bench.TRADEOFF[0])
        bench.press(self.driver, thumb, [bench.step_key(thumb)])

    def wait_finished(self) -> None:
        page_log.wait_finished(self.driver, "browser B's tau step", self.timeout * 4)


class ProtocolB:
    """Session B over Streamlit's protocol, on an event loop of its own thread; each step moves tau 0.05 up."""

    def __init__(self, url: str, timeout: float):
        self.timeout, self.tau, self.pending = timeout, DEFAULT_TAU, None
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.session = ProtocolSession(url, page=bench.TRADEOFF[0].strip("/"))
        self._call(self.session.__aenter__()).result(timeout)
        self._call(self.session.run(timeout * 8)).result(timeout * 8)

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def start_tau_step(self) -> None:
        self.tau = round(self.tau + 0.05, 2)
        self.pending = self._call(self.session.move_slider(B_SLIDER, self.tau, self.timeout * 4))

    def wait_finished(self) -> None:
        self.pending.result(self.timeout * 4)

    def close(self) -> None:
        self._call(self.session.__aexit__(None, None, None)).result(self.timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)


@contextlib.contextmanager
def session_b(kind: str, url: str, timeout: float):
    if kind == "chromium":
        with browser("drnet-contention-b-") as driver:
            yield ChromiumB(driver, url, timeout)
    else:
        client = ProtocolB(url, timeout)
        try:
            yield client
        finally:
            client.close()


def a_step(driver_a, timeout: float) -> dict:
    return bench.slider_step(driver_a, bench.TRADEOFF[0], A_SLIDER, False, bench.setting_watch("B"), timeout)


def measure(driver_a, b, repeats: int, delay: float | None, timeout: float) -> dict:
    """A's threshold steps, alone (delay None) or `delay` s after B's sidebar tau step."""
    record = {"delay_s": delay, "samples": [], "failures": []}
    for _ in range(repeats):
        if delay is not None:
            b.start_tau_step()
            time.sleep(delay)
        bench.attempt(record, a_step, driver_a, timeout)
        if delay is not None:
            b.wait_finished()
    samples = record["samples"]
    return {**record, "numbers_s": spread([s["numbers_s"] for s in samples if s["numbers_s"] is not None]),
            "finished_s": spread([s["finished_s"] for s in samples])}


@contextlib.contextmanager
def served(env: dict[str, str], replicas: int):
    """(URL for browser A, URL for browser B): one server for both, or A and B on replicas of their own."""
    if replicas == 1:
        with chromium.serve_app(env) as (url, _):
            yield url, url
    else:
        with deploy_replicas.replicas(replicas, chromium.free_port(), first_replica_port=chromium.free_port(),
                                      env=env) as running:
            yield running["replica_urls"][0], running["replica_urls"][1]


def run(repeats: int, eval_limit: int | None, delay: float, sweep_delay: float, timeout: float,
        replicas: int = 1, b_client: str = "chromium") -> dict:
    env = {bench.EVAL_LIMIT_ENV: str(eval_limit)} if eval_limit else {}
    report = {"machine": bench.machine_facts(), "eval_limit_argument": eval_limit, "repeats": repeats,
              "replicas": replicas, "b_client": b_client, "a_slider": A_SLIDER, "b_slider": f"{B_SLIDER} (sidebar)", "target_s": TARGET_S}
    with tempfile.TemporaryDirectory(prefix="drnet-contention-results-") as results, \
            served({**env, result_cache.DIR_ENV: results}, replicas) as (url_a, url_b), \
            browser("drnet-contention-a-") as driver_a, session_b(b_client, url_b, timeout) as b:
        bench.cold_load(driver_a, url_a, *bench.TRADEOFF, timeout * 8)
        report.update(bench.evaluation_size(driver_a))
        report["alone"] = measure(driver_a, b, repeats, None, timeout)
        report["during_tau_step"] = measure(driver_a, b, repeats, delay, timeout)
        report["during_sweep"] = measure(driver_a, b, repeats, sweep_delay, timeout)
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
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=1,
                        help="2: browsers A and B on replicas of their own (needs nginx)")
    parser.add_argument("--b-client", choices=("chromium", "protocol"), default="chromium",
                        help="what drives session B: a headless Chromium, or Streamlit's protocol (draws nothing)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = run(args.repeats, args.eval_limit, args.delay, args.sweep_delay, args.timeout, args.replicas, args.b_client)
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
