"""The trade-off view's cached previews: summaries and the threshold sweep on a fixed, class-stratified
subset of the evaluation set (`drnet_core.analysis.preview`), and which full-set sweeps this server has finished.

Cached the way `state` caches: by checkpoint path and sha256 and every setting that changes a result.
"""
from __future__ import annotations

import os
import threading

import streamlit as st
import torch

from drnet_core.analysis import preview
from drnet_core.compute_gate import heavy_work
from drnet_core.defaults import TAU_MAX, TAU_MIN
from drnet_core.analysis.evaluate import summarize

from drnet_app.state import Settings, evaluation_prefix, evaluation_set, model_and_meta, routed, threshold_sweep


@st.cache_resource(show_spinner=False, max_entries=4)
def preview_positions(dataset_name: str, limit: int) -> torch.Tensor:
    """The preview subset of the first `limit` evaluation images (all of them when too few to preview)."""
    size = preview.preview_size(limit)
    return preview.stratified_positions(evaluation_set().labels[:limit], size) if size else torch.arange(limit)


def preview_name(dataset_name: str, limit: int) -> str:
    return f"a fixed class-stratified preview of {len(preview_positions(dataset_name, limit)):,} of these images"


def _preview_inputs(path: str, sha256: str, dataset_name: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    positions = preview_positions(dataset_name, limit)
    return evaluation_prefix(path, sha256, dataset_name)[positions], evaluation_set().labels[positions]


@st.cache_data(show_spinner=False, max_entries=64)
def _preview_sweep(path: str, sha256: str, dataset_name: str, limit: int, tau: float, noise_seed: int | None,
                   thresholds: tuple[float, ...], class_names: tuple[str, ...]) -> list[dict]:
    model, _ = model_and_meta(path, sha256)
    features, labels = _preview_inputs(path, sha256, dataset_name, limit)
    runs = preview.threshold_sweep_runs(model, features, labels, tau, thresholds, noise_seed=noise_seed)
    return [summarize(run, model, preview_name(dataset_name, limit), class_names) for run in runs]


def preview_summaries(settings: Settings, tau: float, thresholds: tuple[float, ...]) -> list[dict]:
    """`summarize` of the preview subset at tau and each threshold (the sidebar's noise). With noise, the
    preview draws its own noise for its images, so its paths are not the full set's for those images."""
    return _preview_sweep(settings.checkpoint_path, settings.checkpoint_sha, settings.dataset_name,
                          settings.eval_limit, float(tau), settings.noise_seed, tuple(float(h) for h in thresholds),
                          settings.class_names)


def uses_preview(settings: Settings) -> bool:
    """Whether a preview is smaller than the evaluated set, so worth showing first."""
    return len(preview_positions(settings.dataset_name, settings.eval_limit)) < settings.eval_limit


@st.cache_resource(show_spinner=False)
def _finished_sweeps() -> tuple[set, threading.Lock]:
    return set(), threading.Lock()


def _sweep_key(settings: Settings) -> tuple:
    return (settings.checkpoint_path, settings.checkpoint_sha, settings.dataset_name, settings.eval_limit,
            settings.tau, settings.noise_seed)


def full_sweep_ready(settings: Settings) -> bool:
    """Whether this server has swept the whole evaluated set at the sidebar's tau and noise (then cached)."""
    finished, lock = _finished_sweeps()
    with lock:
        return _sweep_key(settings) in finished


def full_sweep(settings: Settings) -> list[dict]:
    """`state.threshold_sweep` over the whole evaluated set, remembered as finished for this server."""
    rows = threshold_sweep(settings)
    finished, lock = _finished_sweeps()
    with lock:
        finished.add(_sweep_key(settings))
    return rows


# ---- warming the next tau step ---------------------------------------------------------------------------

TAU_STEP = 0.05  # the sidebar's tau slider


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


@st.cache_resource(show_spinner=False)
def _warmer() -> Warmer:
    return Warmer()


def neighbouring_taus(tau: float) -> list[float]:
    """The taus one slider step away, the likely next settings."""
    return [value for value in (round(tau + TAU_STEP, 2), round(tau - TAU_STEP, 2))
            if TAU_MIN <= value <= TAU_MAX]


def warm_next_tau_steps(settings: Settings, thresholds: tuple[float, ...]) -> None:
    """In the background: the whole set routed at the sidebar's threshold, and the preview curve, at the
    taus one step from the sidebar's, so that the step a class most likely takes next is already cached."""
    for tau in neighbouring_taus(settings.tau):
        key = (settings.checkpoint_path, settings.checkpoint_sha, settings.dataset_name, settings.eval_limit, tau,
               settings.threshold, settings.noise_seed)

        def work(tau=tau):
            routed(settings.checkpoint_path, settings.checkpoint_sha, settings.dataset_name, settings.eval_limit,
                   tau, settings.threshold, settings.noise_seed)
            if uses_preview(settings):
                preview_summaries(settings, tau, thresholds)
                preview_summaries(settings, tau, (settings.threshold,))

        _warmer().submit(key, work)
