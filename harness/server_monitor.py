"""A served app's health and memory over time: RSS of the server's whole process tree sampled in a
background thread, and whether it levels off (the soak's rule: the last third's peak within a tolerance of
the first two thirds' peak)."""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from deploy.replicas import healthy


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (Linux /proc)."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending += [int(child) for child in (task / "children").read_text().split()]
            except OSError:  # the task or process ended meanwhile
                continue
    return tree


def resident_mb(pid: int) -> float:
    """VmRSS of a process and its descendants, in MB."""
    total_kb = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total_kb += int(match.group(1)) if match else 0
    return total_kb / 1024


class ServerMonitor:
    """Polls health and samples the server's RSS every `every` seconds, in a background thread."""

    def __init__(self, url: str, pid: int, every: float):
        self.url, self.pid, self.every = url, pid, every
        self.phase = "warm-up"
        self.samples: list[dict] = []
        self.health_failures: list[dict] = []
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="server-monitor", daemon=True)

    def __enter__(self) -> ServerMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            t = round(time.monotonic() - self._started, 1)
            if not healthy(self.url, timeout=15):
                self.health_failures.append({"t_s": t, "phase": self.phase})
            self.samples.append({"t_s": t, "phase": self.phase, "rss_mb": round(resident_mb(self.pid), 1)})
            self._stop.wait(self.every)


def levels_off(samples: list[dict], tolerance: float) -> dict:
    """The levels-off verdict over the soak-phase samples (see the module docstring for the rule)."""
    soak = [s for s in samples if s["phase"] == "soak"]
    if len(soak) < 6:
        return {"levels_off": False, "reason": f"only {len(soak)} soak samples; 6 needed"}
    start, end = soak[0]["t_s"], soak[-1]["t_s"]
    cut = start + (end - start) * 2 / 3
    early = [s["rss_mb"] for s in soak if s["t_s"] < cut]
    late = [s["rss_mb"] for s in soak if s["t_s"] >= cut]
    if len(early) < 3 or len(late) < 3:
        return {"levels_off": False, "reason": f"{len(early)} / {len(late)} samples in the two parts; 3 each needed"}
    growth = (max(late) - max(early)) / max(early)
    return {"levels_off": growth <= tolerance, "rule": f"peak RSS of the last third <= (1 + {tolerance:g}) x "
                                                      "peak of the first two thirds (soak phase)",
            "peak_first_two_thirds_mb": max(early), "peak_last_third_mb": max(late),
            "last_third_range_mb": [min(late), max(late)],
            "peak_warm_up_and_soak_mb": max(s["rss_mb"] for s in samples),
            "growth": round(growth, 4), "tolerance": tolerance}
