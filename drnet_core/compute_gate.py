"""One process-wide gate for model evaluation, so that heavy work never stalls an interactive step.

A server's sessions evaluate in threads of one process and share its cores. Every evaluation batch
(`evaluate.run_routed`) takes its threads' worth of the process's cores from the gate and gives them
back when the batch is done, so work yields between units of a few tens of milliseconds. Waiting batches
are served interactive first, then heavy; within each, the batch of the run with the fewest batches left
goes first (shortest remaining work first), then the earlier arrival. So a session's slider step waits for
at most the batches already running, however many sweeps, budget searches or curves other sessions have
queued; and a threshold step, which re-routes a few batches' worth of images, is not held behind another
session's tau step, which routes the whole set. The price: a long run can wait while short ones keep coming.

Work is interactive unless the calling thread marks it heavy:

    with heavy_work():
        rows = [summary(threshold) for threshold in SWEEP_THRESHOLDS]   # yields to every slider step

The mark is a context variable: it holds in this thread (and in what it runs under
`contextvars.copy_context()`), and `evaluate` hands it to the worker threads it starts itself.
"""
from __future__ import annotations

import contextlib
import contextvars
import itertools
import os
import threading

INTERACTIVE, HEAVY = 0, 1
_priority: contextvars.ContextVar[int] = contextvars.ContextVar("drnet_compute_priority", default=INTERACTIVE)


def current_priority() -> int:
    """INTERACTIVE or HEAVY: the calling thread's mark."""
    return _priority.get()


@contextlib.contextmanager
def heavy_work():
    """Mark the evaluations made inside as heavy: they wait while any interactive batch is waiting."""
    token = _priority.set(HEAVY)
    try:
        yield
    finally:
        _priority.reset(token)


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ComputeGate:
    """`capacity` tokens (cores); a waiter is served when its tokens are free and no waiter ranks before it
    (a lower priority number first, then less work left, then the earlier arrival)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"a compute gate needs at least one token, got {capacity}")
        self.capacity = capacity
        self._free = capacity
        self._waiting: set[tuple[int, int, int]] = set()  # (priority, work left, ticket)
        self._tickets = itertools.count()
        self._condition = threading.Condition()

    @contextlib.contextmanager
    def slot(self, tokens: int = 1, priority: int | None = None, work_left: int = 1):
        """Hold `tokens` (at most the capacity) for the body; `priority` defaults to the thread's mark;
        `work_left`: the units (batches) the caller's job has left, this one included."""
        tokens = max(1, min(tokens, self.capacity))
        rank = (current_priority() if priority is None else priority, work_left, next(self._tickets))
        with self._condition:
            self._waiting.add(rank)
            try:
                self._condition.wait_for(lambda: self._free >= tokens and min(self._waiting) == rank)
            finally:
                self._waiting.discard(rank)
            self._free -= tokens
            self._condition.notify_all()  # the next in line may fit in what is left
        try:
            yield
        finally:
            with self._condition:
                self._free += tokens
                self._condition.notify_all()

    def waiting(self) -> dict[str, int]:
        """How many batches wait, per priority (for monitoring and tests)."""
        with self._condition:
            ranks = [rank[0] for rank in self._waiting]
        return {"interactive": ranks.count(INTERACTIVE), "heavy": ranks.count(HEAVY)}


_process_gate: ComputeGate | None = None
_process_gate_lock = threading.Lock()


def process_gate() -> ComputeGate:
    """The gate every evaluation in this process goes through, one token per usable CPU."""
    global _process_gate
    with _process_gate_lock:
        if _process_gate is None:
            _process_gate = ComputeGate(available_cpus())
        return _process_gate
