"""A classroom against one server: N sessions moving the sliders of "Temperature & threshold" at once.

    python -m harness.load_classroom [--sessions 1,10,30] [--browsers 2] [--minutes 3]
                                                            [--eval-limit N] [--json out.json]

For each class size a fresh `streamlit run` on a free loopback port (harness/chromium.py::serve_app), with
an empty result cache of its own, so no class reuses another's results or an earlier run's; the
sessions open /tradeoff at the app's default setting, then for --minutes each one, after a think time of
--pace seconds (+-50 %, seeded), steps a sidebar slider and waits for the page's run to end: the
threshold by +-0.01, and every --tau-every-th step tau by +-0.05 (a random walk from the default, so
students' settings meet and part as they would in a lesson). The first --browsers sessions are real
headless Chromium tabs, stepped with the keyboard and timed in the page (harness/bench_browser.py); the
others speak Streamlit's websocket protocol (harness/streamlit_client.py), which costs the server what a
browser costs it, without a browser's CPU on this machine.

Per step: "numbers" (the first metric of the new run arrived: the moment changed numbers show) and
"finished" (the run is over: curve, histograms, flip list drawn). Reported per class size: p50 and p95
of both, over all steps and per slider; failures (a run that ended in an error or took over --step-timeout);
the server's resident memory (VmRSS, sampled every second) at the start and its peak. Everything stops
by itself after each size's --minutes, and stays on loopback.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import threading
import time
from pathlib import Path

from harness import bench_browser as bench
from harness import chromium
from harness.server_monitor import resident_mb
from harness.streamlit_client import ProtocolSession

from drnet_app import result_cache
from drnet_core.defaults import TAU_MAX, TAU_MIN

DEFAULT_TAU, DEFAULT_THRESHOLD = 0.25, 0.3  # the shipped checkpoint's default, where every session starts
TAU_SLIDER, THRESHOLD_SLIDER = "Gumbel temperature tau", "Selection threshold"
THRESHOLD_RANGE = (0.0, 1.0)
TAU_RANGE = (TAU_MIN, TAU_MAX)


def percentile(samples: list[float], fraction: float) -> float | None:
    """The `fraction` quantile by linear interpolation (numpy's default), None for no samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def walk(rng: random.Random, tau: float, threshold: float, step: int, tau_every: int) -> tuple[str, float, float]:
    """The next setting of a session's random walk: (slider moved, tau, threshold)."""
    if tau_every and step % tau_every == tau_every - 1:
        tau = round(min(max(tau + rng.choice((-0.05, 0.05)), TAU_RANGE[0]), TAU_RANGE[1]), 2)
        return "tau", tau, threshold
    threshold = round(min(max(threshold + rng.choice((-0.01, 0.01)), THRESHOLD_RANGE[0]), THRESHOLD_RANGE[1]), 2)
    return "threshold", tau, threshold


class Phase:
    """Warm-up, then stepping: every session loads its page first; the stepping minutes start when all
    have (or the load timeout has passed), so that a slow first load does not eat them."""

    def __init__(self, sessions: int, minutes: float, load_timeout: float):
        self.sessions, self.minutes, self.load_timeout = sessions, minutes, load_timeout
        self.go = threading.Event()
        self.deadline = float("inf")
        self.warm_up_s: float | None = None
        self._arrived = 0
        self._lock = threading.Lock()

    def arrive(self) -> None:
        with self._lock:
            self._arrived += 1

    def start_when_loaded(self) -> None:
        started = time.monotonic()
        while self._arrived < self.sessions and time.monotonic() - started < self.load_timeout:
            time.sleep(0.2)
        self.warm_up_s = time.monotonic() - started
        self.deadline = time.monotonic() + self.minutes * 60
        self.go.set()

    async def wait_async(self) -> None:
        while not self.go.is_set():
            await asyncio.sleep(0.2)


class Recorder:
    """Steps and failures of every session, from the event loop and the browser threads."""

    def __init__(self):
        self.steps: list[dict] = []
        self.failures: list[dict] = []
        self._lock = threading.Lock()

    def step(self, **record) -> None:
        with self._lock:
            self.steps.append(record)

    def failure(self, **record) -> None:
        with self._lock:
            self.failures.append(record)


async def protocol_session(url: str, index: int, phase: Phase, args, recorder: Recorder) -> None:
    rng = random.Random(args.seed * 1000 + index)
    tau, threshold = DEFAULT_TAU, DEFAULT_THRESHOLD
    try:
        async with ProtocolSession(url, page="tradeoff", query=f"tau={tau}&threshold={threshold}") as session:
            try:
                await session.run(timeout=args.load_timeout)
            finally:
                phase.arrive()
            await phase.wait_async()
            step = 0
            while True:
                await asyncio.sleep(args.pace * rng.uniform(0.5, 1.5))
                if time.monotonic() >= phase.deadline:
                    return
                slider, tau, threshold = walk(rng, tau, threshold, step, args.tau_every)
                label, value = (TAU_SLIDER, tau) if slider == "tau" else (THRESHOLD_SLIDER, threshold)
                try:
                    timing = await session.move_slider(label, value, timeout=args.step_timeout)
                except Exception as error:  # a failed or stuck step is counted, and the session goes on
                    recorder.failure(session=index, client="protocol", slider=slider, error=repr(error)[:300])
                else:
                    recorder.step(session=index, client="protocol", slider=slider, **timing)
                step += 1
    except Exception as error:
        recorder.failure(session=index, client="protocol", slider=None, error=f"session lost: {error!r}"[:300])


def browser_session(url: str, index: int, phase: Phase, args, recorder: Recorder) -> None:
    rng = random.Random(args.seed * 1000 + index)
    path = f"/tradeoff?tau={DEFAULT_TAU}&threshold={DEFAULT_THRESHOLD}"
    try:
        with chromium.chromium("1280,900", page_load_timeout=args.load_timeout,
                               profile_prefix=f"drnet-class-{index}-") as driver:
            try:
                bench.cold_load(driver, url, path, bench.TRADEOFF[1], args.load_timeout)
            finally:
                phase.arrive()
            phase.go.wait()
            step = 0
            while True:
                time.sleep(args.pace * rng.uniform(0.5, 1.5))
                if time.monotonic() >= phase.deadline:
                    return
                slider = walk(rng, 0, 0, step, args.tau_every)[0]
                label = TAU_SLIDER if slider == "tau" else THRESHOLD_SLIDER
                try:
                    timing = bench.slider_step(driver, path, label, True, bench.setting_watch("A"), args.step_timeout)
                except Exception as error:
                    recorder.failure(session=index, client="chromium", slider=slider, error=repr(error)[:300])
                    bench.settle(driver, "a failed step", args.load_timeout)
                else:
                    numbers = timing["numbers_s"] or timing["finished_s"]  # unchanged numbers: shown at the end
                    recorder.step(session=index, client="chromium", slider=slider, numbers_s=numbers,
                                  finished_s=timing["finished_s"])
                step += 1
    except Exception as error:
        phase.arrive()  # a browser that never started must not hold the others back
        recorder.failure(session=index, client="chromium", slider=None, error=f"browser lost: {error!r}"[:300])


def summary(steps: list[dict]) -> dict:
    numbers, finished = [s["numbers_s"] for s in steps], [s["finished_s"] for s in steps]
    return {"steps": len(steps),
            "numbers_p50_s": percentile(numbers, 0.5), "numbers_p95_s": percentile(numbers, 0.95),
            "finished_p50_s": percentile(finished, 0.5), "finished_p95_s": percentile(finished, 0.95)}


def run_class(sessions: int, args) -> dict:
    """One class size against a fresh server with an empty result cache; the report of its steps and memory."""
    env = {bench.EVAL_LIMIT_ENV: str(args.eval_limit)} if args.eval_limit else {}
    recorder, memory = Recorder(), []
    with tempfile.TemporaryDirectory(prefix="drnet-class-results-") as results, \
            chromium.serve_app({**env, result_cache.DIR_ENV: results}) as (url, server):
        start_mb = resident_mb(server.pid)
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(1.0):
                memory.append(resident_mb(server.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # The class opens the link at once; the stepping minutes start when every page has loaded.
        phase = Phase(sessions, args.minutes, args.load_timeout)
        browsers = min(args.browsers, sessions)
        threads = [threading.Thread(target=browser_session, args=(url, index, phase, args, recorder))
                   for index in range(browsers)] + [threading.Thread(target=phase.start_when_loaded)]
        for thread in threads:
            thread.start()

        async def protocol_sessions() -> None:
            await asyncio.gather(*(protocol_session(url, index, phase, args, recorder)
                                   for index in range(browsers, sessions)))

        asyncio.run(protocol_sessions())
        for thread in threads:
            thread.join(timeout=args.step_timeout + args.load_timeout)
        stop_sampling.set()
        sampler.join()
    steps = recorder.steps
    return {"sessions": sessions, "browsers": browsers, "protocol_sessions": sessions - browsers,
            "warm_up_s": phase.warm_up_s,
            "all": summary(steps), "threshold": summary([s for s in steps if s["slider"] == "threshold"]),
            "tau": summary([s for s in steps if s["slider"] == "tau"]),
            "by_client": {client: summary([s for s in steps if s["client"] == client])
                          for client in ("chromium", "protocol")},
            "failures": len(recorder.failures), "failure_details": recorder.failures[:10],
            "memory_mb": {"at_start": round(start_mb), "peak": round(max(memory, default=start_mb)),
                          "at_end": round(memory[-1]) if memory else None, "samples": len(memory)}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,10,30", help="class sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--browsers", type=int, default=2, help="real Chromium sessions in each class (default: 2)")
    parser.add_argument("--minutes", type=float, default=3.0, help="stepping time per class size")
    parser.add_argument("--pace", type=float, default=5.0, help="mean think time between a session's steps, s")
    parser.add_argument("--tau-every", type=int, default=4, help="every n-th step moves tau (0: never)")
    parser.add_argument("--eval-limit", type=int, default=None, help="DRNET_EVAL_LIMIT (default: the app's)")
    parser.add_argument("--step-timeout", type=float, default=300.0)
    parser.add_argument("--load-timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = {"machine": bench.machine_facts(), "arguments": vars(args) | {"json": str(args.json)}, "classes": []}
    for sessions in (int(part) for part in args.sessions.split(",")):
        report["classes"].append(run_class(sessions, args))
        row = report["classes"][-1]
        print(f"{sessions:3d} sessions ({row['browsers']} in Chromium): {row['all']['steps']} steps, "
              f"numbers p50/p95 {fmt(row['all']['numbers_p50_s'])}/{fmt(row['all']['numbers_p95_s'])} s, "
              f"finished p50/p95 {fmt(row['all']['finished_p50_s'])}/{fmt(row['all']['finished_p95_s'])} s, "
              f"failures {row['failures']}, memory {row['memory_mb']['at_start']} -> peak "
              f"{row['memory_mb']['peak']} MB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
