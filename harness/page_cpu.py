"""What a page load costs the browser: CPU seconds of headless Chromium's renderer processes per page.

    python -m harness.page_cpu [--eval-limit 200] [--pages tradeoff,tradeoff,inspect,clusters] [--json out.json]

Starts the app (`harness/chromium.py::serve_app`) and one headless Chromium, opens each page in turn as a
new session and waits until Streamlit has finished (`settled`); for each load it reports the wall time
and the CPU time (user + system, from /proc) that Chromium's renderer processes spent meanwhile. Repeating
a page shows the cost of a load whose scripts the browser has already compiled. Linux only.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from harness.chromium import chromium, serve_app, settled

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def renderer_cpu_seconds() -> float:
    """User + system CPU seconds of every live Chromium renderer process."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"--type=renderer" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def measure(pages: list[str], eval_limit: int) -> list[dict]:
    loads = []
    with serve_app({"DRNET_EVAL_LIMIT": str(eval_limit)}) as (url, _), \
            chromium("1500,1150", page_load_timeout=600, profile_prefix="drnet-page-cpu-") as driver:
        for page in pages:
            cpu, started = renderer_cpu_seconds(), time.monotonic()
            driver.get(f"{url}/{page}")
            settled(driver)
            loads.append({"page": page, "wall_s": round(time.monotonic() - started, 2),
                          "renderer_cpu_s": round(renderer_cpu_seconds() - cpu, 2)})
    return loads


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval-limit", type=int, default=200, help="DRNET_EVAL_LIMIT for the server")
    parser.add_argument("--pages", default="tradeoff,tradeoff,tradeoff,inspect,inspect,how-it-works,clusters",
                        help="comma-separated page paths, opened in this order")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    loads = measure([page for page in args.pages.split(",") if page], args.eval_limit)
    for load in loads:
        print(f"{load['page']:>14}: renderer {load['renderer_cpu_s']:5.2f} CPU s in {load['wall_s']:5.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"eval_limit": args.eval_limit, "loads": loads}, indent=2) + "\n")
    return loads


if __name__ == "__main__":
    main()
