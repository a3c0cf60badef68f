"""The process-wide compute gate (drnet_core/compute_gate.py): interactive batches go before heavy ones,
the cores are never oversubscribed, and evaluation batches carry their caller's mark into worker threads.

Run: .venv/bin/python -m pytest -q tests/test_compute_gate.py
"""
from __future__ import annotations

import threading
import time

import torch
from helpers import tiny_model

from drnet_core import compute_gate

from drnet_core.analysis import evaluate
from drnet_core.compute_gate import HEAVY, INTERACTIVE, ComputeGate, heavy_work


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_an_interactive_batch_goes_before_heavy_batches_that_queued_earlier():
    gate = ComputeGate(capacity=1)
    order, release = [], threading.Event()

    def hold():
        with gate.slot(priority=HEAVY):
            release.wait()

    def take(name, priority):
        with gate.slot(priority=priority):
            order.append(name)

    holder = threading.Thread(target=hold)
    holder.start()
    wait_for(lambda: gate._free == 0)
    threads = []
    for name, priority in (("heavy 1", HEAVY), ("heavy 2", HEAVY), ("interactive", INTERACTIVE)):
        threads.append(threading.Thread(target=take, args=(name, priority)))
        threads[-1].start()
        wait_for(lambda: sum(gate.waiting().values()) == len(threads))
    assert gate.waiting() == {"interactive": 1, "heavy": 2}
    release.set()
    for thread in [holder] + threads:
        thread.join()
    assert order == ["interactive", "heavy 1", "heavy 2"]


def test_among_interactive_batches_the_run_with_less_work_left_goes_first():
    gate = ComputeGate(capacity=1)
    order, release = [], threading.Event()

    def hold():
        with gate.slot():
            release.wait()

    def take(name, work_left):
        with gate.slot(priority=INTERACTIVE, work_left=work_left):
            order.append(name)

    holder = threading.Thread(target=hold)
    holder.start()
    wait_for(lambda: gate._free == 0)
    threads = []
    for name, work_left in (("tau step, 40 batches left", 40), ("threshold step, 1 batch left", 1),
                            ("tau step, 39 batches left", 39)):
        threads.append(threading.Thread(target=take, args=(name, work_left)))
        threads[-1].start()
        wait_for(lambda: sum(gate.waiting().values()) == len(threads))
    release.set()
    for thread in [holder] + threads:
        thread.join()
    assert order == ["threshold step, 1 batch left", "tau step, 39 batches left", "tau step, 40 batches left"]


def test_holders_never_exceed_the_capacity():
    gate = ComputeGate(capacity=3)
    held, peak, lock = [0], [0], threading.Lock()

    def work(tokens):
        taken = min(tokens, gate.capacity)  # a request beyond the capacity takes all of it
        for _ in range(20):
            with gate.slot(tokens=tokens, priority=tokens % 2):
                with lock:
                    held[0] += taken
                    peak[0] = max(peak[0], held[0])
                time.sleep(0.001)
                with lock:
                    held[0] -= taken

    threads = [threading.Thread(target=work, args=(tokens,)) for tokens in (1, 2, 3, 1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 3 and held[0] == 0


class RecordingGate(ComputeGate):
    def __init__(self):
        super().__init__(capacity=2)
        self.priorities, self.work_left = [], []

    def slot(self, tokens=1, priority=None, work_left=1):
        self.priorities.append(compute_gate.current_priority() if priority is None else priority)
        self.work_left.append(work_left)
        return super().slot(tokens, priority, work_left)


def test_evaluation_batches_carry_the_callers_mark_into_their_worker_threads(monkeypatch):
    gate = RecordingGate()
    monkeypatch.setattr(evaluate, "process_gate", lambda: gate)
    monkeypatch.setattr(evaluate, "batch_workers", lambda device, batches: 2)  # worker threads even on one core
    model, inputs, labels = tiny_model(), torch.randn(64, 1, 28, 28), torch.arange(64) % 10
    plain = evaluate.run_routed(model, inputs, labels, tau=0.5, threshold=0.3, batch_size=16)
    assert gate.priorities == [INTERACTIVE] * 4
    assert sorted(gate.work_left, reverse=True) == [4, 3, 2, 1]  # batches left, this one included
    with heavy_work():
        heavy = evaluate.run_routed(model, inputs, labels, tau=0.5, threshold=0.3, batch_size=16)
    assert gate.priorities[4:] == [HEAVY] * 4
    assert compute_gate.current_priority() == INTERACTIVE
    assert torch.equal(plain.path_masks, heavy.path_masks) and torch.equal(plain.mflops, heavy.mflops)
