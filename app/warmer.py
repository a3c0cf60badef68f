"""A background thread that computes, at the lowest priority, what a likely next slider step needs."""
from __future__ import annotations

import os
import threading

from drnet_core.compute_gate import heavy_work


class Warmer:
    """One background thread that computes, one at a time and each once, what a likely next step needs.

    At most `kept` tasks wait: older ones are dropped, as the steps they prepared are no longer the likely
    ones. The thread runs at the lowest CPU priority, so that interactive steps go first."""

    def __init__(self, kept: int = 4):
        self.kept = kept
        self._queue: list[tuple[tuple, object]] = []
        self._known: set[tuple] = set()
        self._lock = threading.Condition()
        threading.Thread(target=self._work, name="drnet-warmer", daemon=True).start()

    def submit(self, key: tuple, work) -> None:
        with self._lock:
            if key not in self._known:
                self._known.add(key)
                self._queue.append((key, work))
                while len(self._queue) > self.kept:
                    self._known.discard(self._queue.pop(0)[0])
                self._lock.notify()

    def _work(self) -> None:
        try:  # Linux gives each thread its own niceness
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        while True:
            with self._lock:
                while not self._queue:
                    self._lock.wait()
                _, work = self._queue.pop(0)
            try:
                with heavy_work():  # behind every interactive step in the process-wide compute gate
                    work()
            except Exception:  # a failed warm-up only means the step computes it when asked
                pass
