"""The on-disk result cache shared by server processes (app/result_cache.py): results read back
exactly as computed, keys, bounds and eviction, leftovers, and identical requests computed once by
threads and by processes.

Run: .venv/bin/python -m pytest -q tests/test_result_cache.py
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time

import pytest
import torch
from helpers import tiny_model

from drnet_app import result_cache
from drnet_core.analysis.evaluate import run_routed, summarize
from drnet_app.result_cache import (LEFTOVER_GRACE_S, PLAIN, ROUTED_RUN, ResultCache)

SHA = "ab" * 32
OTHER_SHA = "cd" * 32


def age(path, seconds_ago: float) -> None:
    stamp = time.time() - seconds_ago
    os.utime(path, (stamp, stamp))


class Counting:
    """A compute function that counts its calls."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value


def tiny_run(tau=0.5, threshold=0.3, noise_seed=None):
    model = tiny_model()
    torch.manual_seed(1)
    inputs, labels = torch.randn(40, 1, 28, 28), torch.arange(40) % 10
    return model, run_routed(model, inputs, labels, tau=tau, threshold=threshold, noise_seed=noise_seed,
                             batch_size=16)


@pytest.mark.parametrize("noise_seed", [None, 3])
def test_a_restarted_cache_returns_exactly_the_fresh_computation(tmp_path, noise_seed):
    model, fresh = tiny_run(noise_seed=noise_seed)
    key = {"tau": 0.5, "threshold": 0.3, "noise_seed": noise_seed}
    ResultCache(tmp_path).get_or_compute(SHA, "routed", key, lambda: fresh, codec=ROUTED_RUN)
    compute = Counting(None)
    again = ResultCache(tmp_path).get_or_compute(SHA, "routed", key, compute, codec=ROUTED_RUN)  # a new process
    assert compute.calls == 0
    for field in dataclasses.fields(fresh):
        stored, expected = getattr(again, field.name), getattr(fresh, field.name)
        if isinstance(expected, torch.Tensor):
            assert stored.dtype == expected.dtype and torch.equal(stored, expected), field.name
        else:
            assert stored == expected, field.name
    assert summarize(again, model, "set", ("a",) * 10) == summarize(fresh, model, "set", ("a",) * 10)


def test_plain_results_round_trip_and_keys_separate_settings_checkpoints_and_kinds(tmp_path):
    cache = ResultCache(tmp_path)
    rows = [{"tau": 0.25, "accuracy": 0.932, "per_class": {"Coat": {"n": 3}}, "noise_seed": None}]
    assert cache.get_or_compute(SHA, "summary", {"tau": 0.25}, lambda: rows) == rows
    assert cache.get(SHA, "summary", {"tau": 0.25}) == rows
    for sha, kind, key in ((SHA, "summary", {"tau": 0.3}), (OTHER_SHA, "summary", {"tau": 0.25}),
                           (SHA, "sweep", {"tau": 0.25})):
        assert cache.get(sha, kind, key) is None
    assert len(cache.stored_files()) == 1
    assert cache.stored_files()[0].name.startswith(SHA + ".summary.")


def test_results_of_other_code_are_not_served(tmp_path, monkeypatch):
    cache = ResultCache(tmp_path)
    cache.get_or_compute(SHA, "summary", {"tau": 1}, lambda: 1)
    monkeypatch.setattr(result_cache, "code_fingerprint", lambda: "another version")
    assert cache.get(SHA, "summary", {"tau": 1}) is None


def test_a_damaged_file_is_dropped_and_recomputed(tmp_path):
    cache = ResultCache(tmp_path)
    cache.get_or_compute(SHA, "summary", {"tau": 1}, lambda: [1, 2])
    (path,) = cache.stored_files()
    path.write_bytes(b"not a result")
    compute = Counting([1, 2])
    assert cache.get_or_compute(SHA, "summary", {"tau": 1}, compute) == [1, 2]
    assert compute.calls == 1 and cache.get(SHA, "summary", {"tau": 1}) == [1, 2]


def test_count_bound_evicts_the_least_recently_used_and_a_hit_counts_as_use(tmp_path):
    cache = ResultCache(tmp_path, max_files=3)
    for tau in range(3):
        cache.get_or_compute(SHA, "summary", {"tau": tau}, lambda: tau)
    for path, seconds_ago in zip(cache.stored_files(), (30, 20, 10)):
        age(path, seconds_ago)
    oldest = cache.stored_files()[0]
    assert cache.get(SHA, "summary", {"tau": int(torch.load(oldest, weights_only=True)["value"])}) is not None
    cache.get_or_compute(SHA, "summary", {"tau": 3}, lambda: 3)
    assert oldest.exists() and len(cache.stored_files()) == 3


def test_byte_bound_and_bounds_applied_when_a_server_starts(tmp_path):
    big = torch.zeros(50_000)  # 200 kB
    cache = ResultCache(tmp_path, max_files=10, max_bytes=10_000_000)
    for tau in range(4):
        cache.get_or_compute(SHA, "routed", {"tau": tau}, lambda: big)
    assert len(cache.stored_files()) == 4
    restarted = ResultCache(tmp_path, max_files=10, max_bytes=450_000)
    assert len(restarted.stored_files()) == 2
    assert sum(path.stat().st_size for path in restarted.stored_files()) <= 450_000


def test_only_its_own_files_are_touched_and_only_old_leftovers_removed(tmp_path):
    foreign = [tmp_path / "notes.txt", tmp_path / f"{SHA}.pt", tmp_path / "upload.pt.1.2.tmp"]
    for path in foreign:
        path.write_bytes(b"x" * 100)
    name = f"{SHA}.routed.{'0' * 32}.pt"
    old_partial, young_partial = tmp_path / f"{name}.1.2.tmp", tmp_path / f"{name}.3.4.tmp"
    old_lock, young_lock = tmp_path / f"{SHA}.summary.{'1' * 32}.pt.lock", tmp_path / f"{name}.lock"
    for path in (old_partial, young_partial, old_lock, young_lock):
        path.write_bytes(b"")
    age(old_partial, LEFTOVER_GRACE_S + 60)
    age(old_lock, LEFTOVER_GRACE_S + 60)
    cache = ResultCache(tmp_path, max_files=1, max_bytes=10)
    assert cache.stored_files() == []
    assert all(path.exists() for path in foreign + [young_partial, young_lock])
    assert not old_partial.exists() and not old_lock.exists()


def test_identical_requests_in_threads_are_computed_once(tmp_path):
    cache = ResultCache(tmp_path)
    calls, results = [], []

    def compute():
        calls.append(1)
        time.sleep(0.3)
        return {"accuracy": 0.5}

    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute(SHA, "summary", {"t": 1}, compute)))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and results == [{"accuracy": 0.5}] * 6


COMPUTE_IN_A_PROCESS = """
import sys, time
from drnet_app.result_cache import ResultCache
def compute():
    with open(sys.argv[2], "a") as log:
        log.write("computed\\n")
    time.sleep(1.5)
    return {"value": 42}
print(ResultCache(sys.argv[1]).get_or_compute("ab" * 32, "summary", {"t": 1}, compute))
"""


@pytest.mark.skipif(result_cache.fcntl is None, reason="processes share the computation through flock")
def test_identical_requests_in_two_processes_are_computed_once(tmp_path):
    calls = tmp_path / "calls.log"
    cache_dir = tmp_path / "cache"
    processes = [subprocess.Popen([sys.executable, "-c", COMPUTE_IN_A_PROCESS, str(cache_dir), str(calls)],
                                  cwd=result_cache.Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=120)[0].strip() for process in processes]
    assert [process.returncode for process in processes] == [0, 0]
    assert outputs == ["{'value': 42}"] * 2
    assert calls.read_text().count("computed") == 1


def test_bounds_and_directory_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DRNET_RESULT_CACHE_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("DRNET_RESULT_CACHE_MAX_FILES", "5")
    monkeypatch.setenv("DRNET_RESULT_CACHE_MAX_MB", "0.5")
    cache = ResultCache.from_environment(tmp_path / "ignored")
    assert (cache.directory, cache.max_files, cache.max_bytes) == (tmp_path / "shared", 5, 500_000)
    monkeypatch.setenv("DRNET_RESULT_CACHE_MAX_FILES", "many")
    with pytest.raises(ValueError, match="DRNET_RESULT_CACHE_MAX_FILES='many' is not a int"):
        ResultCache.from_environment()


@pytest.mark.parametrize("sha, kind", [("../etc", "summary"), (SHA, "../x"), (SHA, "Summary")])
def test_crafted_checkpoint_digests_and_kinds_are_refused(tmp_path, sha, kind):
    with pytest.raises(ValueError):
        ResultCache(tmp_path).get_or_compute(sha, kind, {}, lambda: 1, codec=PLAIN)


def test_the_apps_runs_and_summaries_come_from_disk_after_a_restart_exactly(tmp_path, monkeypatch):
    import streamlit as st
    monkeypatch.setenv("DRNET_RESULT_CACHE_DIR", str(tmp_path))
    from drnet_app import caches
    from drnet_app.state import Checkpoint
    from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, sha256_of

    checkpoint = Checkpoint(str(SHIPPED_CHECKPOINT), sha256_of(SHIPPED_CHECKPOINT), SHIPPED_CHECKPOINT.name)
    st.cache_data.clear(), st.cache_resource.clear()
    images = caches.evaluation_set()
    arguments = (checkpoint, images.name, 300, 0.25, 0.3, None)
    first = caches.routed(*arguments)
    summary = caches.routed_summary(*arguments, images.subset(300).name, caches.FASHION_CLASSES)
    model, _ = caches.model_and_meta(checkpoint)
    fresh = run_routed(model, caches.evaluation_inputs(images.name)[:300], images.labels[:300], tau=0.25, threshold=0.3)

    st.cache_data.clear(), st.cache_resource.clear()  # a restarted server, or another replica

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated again instead of reading the stored result")

    monkeypatch.setattr(caches, "run_routed", no_evaluation)
    monkeypatch.setattr(caches, "rerun_at_threshold", no_evaluation)
    again = caches.routed(*arguments)
    assert caches.routed_summary(*arguments, images.subset(300).name, caches.FASHION_CLASSES) == summary
    for field in dataclasses.fields(fresh):
        expected = getattr(fresh, field.name)
        for stored in (getattr(first, field.name), getattr(again, field.name)):
            assert torch.equal(stored, expected) if isinstance(expected, torch.Tensor) else stored == expected
    st.cache_data.clear(), st.cache_resource.clear()
