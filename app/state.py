"""App plumbing: the global settings, cached loaders (the pay-off view's are in payoff_rows.py), URL
query-parameter sync, small UI helpers. The sidebar that sets the settings is sidebar.py.

Computation lives in drnet_core; this module only decides what is cached and how: the model once
per process and checkpoint (st.cache_resource, keyed by path and sha256), results by every setting
that changes them (st.cache_data). Every page evaluates the same images: by default the whole test
split, the set the checkpoint's recorded test accuracy and the CLI's `evaluate` use.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch
from PIL import Image

from drnet_core.analysis import attribution, explorer
from drnet_core.net.checkpoint import BUNDLED_CHECKPOINTS, default_device, load_checkpoint
from drnet_core.compute_gate import heavy_work
from drnet_core.net.cost import TimeTable, measure_time_table
from drnet_core.data.datasets import FASHION_CLASSES, ImageSet, load_test_set, to_model_input
from drnet_core.analysis.evaluate import (SWEEP_THRESHOLDS, RoutedRun, default_setting, prefix_features, rerun_at_threshold,
                                  run_routed, summarize)
from drnet_core.data.images import ImageRejected, PreparedImage, image_from_bytes, prepare_dataset_image, prepare_image
from drnet_app.result_cache import ROUTED_RUN, ResultCache

TIME_TABLE_BATCH = 256  # the batch size `bench` reports; the audit's time estimates are per image in it


@dataclass(frozen=True)
class Settings:
    """The sidebar's global settings; every cached result is keyed by the fields it depends on."""

    checkpoint_path: str
    checkpoint_sha: str
    checkpoint_name: str
    tau: float
    threshold: float
    noise: bool
    seed: int
    eval_limit: int
    dataset_name: str

    @property
    def noise_seed(self) -> int | None:
        return self.seed if self.noise else None

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(model_and_meta(self.checkpoint_path, self.checkpoint_sha)[1].get("class_names", FASHION_CLASSES))


# ---- URL query parameters ----------------------------------------------------------------------

def _parse(raw: str, default):
    try:
        if isinstance(default, bool):
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(float(raw))
        if isinstance(default, float):
            value = float(raw)
            return value if np.isfinite(value) else default
        return type(default)(raw)
    except (TypeError, ValueError):
        return default


def bound(key: str, default, *, low=None, high=None, options=None) -> str:
    """Seed a widget's session state from the URL (once per session) and return its key.

    Out-of-range or unknown values from a hand-edited link fall back to the default.
    """
    if key not in st.session_state:
        value = default
        if key in st.query_params:
            value = _parse(st.query_params[key], default)
        if low is not None and not low <= value <= high:
            value = default
        if options is not None and value not in options:
            value = default
        st.session_state[key] = value
    return key


def publish(*keys: str) -> None:
    """Mirror the current widget values into the URL so a link reproduces the view."""
    for key in keys:
        if key in st.session_state:
            value = st.session_state[key]
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if st.query_params.get(key) != text:
                st.query_params[key] = text


# ---- cached loaders ------------------------------------------------------------------------------

# Bounded: every distinct uploaded checkpoint would otherwise stay in memory for the life of the server.
@st.cache_resource(show_spinner="Loading the checkpoint…", max_entries=4)
def model_and_meta(path: str, sha256: str):
    """One model per process and checkpoint, shared read-only by every session (never trained or edited)."""
    bundled = Path(path) in BUNDLED_CHECKPOINTS.values()
    model, meta = load_checkpoint(path, device=default_device(), verify_sha256=bundled, fold_batch_norms=True)
    return model, meta


@st.cache_resource(show_spinner="Loading the evaluation set…")
def evaluation_set() -> ImageSet:
    return load_test_set()


@st.cache_resource(show_spinner=False)
def evaluation_inputs(dataset_name: str) -> torch.Tensor:
    return to_model_input(evaluation_set().images)


# The stem and first reduction of every evaluation image do not depend on tau, the threshold or the
# noise, and are a fifth of a routed evaluation: computed once per checkpoint, a slider step skips
# them. 376 MB for 10,000 Fashion-MNIST images with the shipped architecture, hence few entries.
@st.cache_resource(show_spinner="Preparing the evaluation set for this checkpoint…", max_entries=2)
def evaluation_prefix(path: str, sha256: str, dataset_name: str) -> torch.Tensor:
    model, _ = model_and_meta(path, sha256)
    return prefix_features(model, evaluation_inputs(dataset_name))


def limited_set(settings: Settings) -> ImageSet:
    return evaluation_set().subset(settings.eval_limit)


# Recent runs, for every session: a threshold step from the run at the nearest threshold (same checkpoint,
# images, tau and noise) re-routes only the images whose path changes (`evaluate.rerun_at_threshold`).
RECENT_RUNS_KEPT = 48  # about 2.5 MB each for 10,000 images


@st.cache_resource(show_spinner=False)
def _recent_runs() -> tuple[OrderedDict, threading.Lock]:
    return OrderedDict(), threading.Lock()


# Under the in-memory caches, one on disk per checkpoint sha256 (drnet_app.result_cache), shared by a
# restarted server and by every replica pointed at the same DRNET_RESULT_CACHE_DIR. Created once per process:
# creating it applies its bounds to what earlier runs left.
@st.cache_resource(show_spinner=False)
def result_cache() -> ResultCache:
    return ResultCache.from_environment()


@st.cache_data(show_spinner=False, max_entries=64)
def routed(path: str, sha256: str, dataset_name: str, limit: int, tau: float, threshold: float,
           noise_seed: int | None) -> RoutedRun:
    model, _ = model_and_meta(path, sha256)
    key = {"dataset": dataset_name, "limit": limit, "tau": tau, "threshold": threshold, "noise_seed": noise_seed,
           "device": model.device.type}
    run = result_cache().get_or_compute(
        sha256, "routed", key, lambda: _route(model, path, sha256, dataset_name, limit, tau, threshold, noise_seed),
        codec=ROUTED_RUN)
    runs, lock = _recent_runs()
    with lock:
        runs[(path, sha256, dataset_name, limit, tau, noise_seed, threshold)] = run
        runs.move_to_end((path, sha256, dataset_name, limit, tau, noise_seed, threshold))
        while len(runs) > RECENT_RUNS_KEPT:
            runs.popitem(last=False)
    return run


def _route(model, path: str, sha256: str, dataset_name: str, limit: int, tau: float, threshold: float,
           noise_seed: int | None) -> RoutedRun:
    features = evaluation_prefix(path, sha256, dataset_name)[:limit]
    runs, lock = _recent_runs()
    same_routing = (path, sha256, dataset_name, limit, tau, noise_seed)
    with lock:
        bases = [run for key, run in runs.items() if key[:-1] == same_routing]
    if bases:
        nearest = min(bases, key=lambda run: abs(run.threshold - threshold))
        return rerun_at_threshold(model, features, nearest, threshold, from_prefix=True)
    return run_routed(model, features, evaluation_set().labels[:limit], tau=tau, threshold=threshold,
                      noise_seed=noise_seed, from_prefix=True)


def routed_run(settings: Settings, tau: float | None = None, threshold: float | None = None,
               limit: int | None = None) -> RoutedRun:
    """The evaluation set routed at the sidebar setting (or the given tau/threshold), with a spinner."""
    tau = settings.tau if tau is None else tau
    threshold = settings.threshold if threshold is None else threshold
    limit = settings.eval_limit if limit is None else min(limit, settings.eval_limit)
    with st.spinner(f"Routing {limit:,} images at tau {tau:g}, threshold {threshold:g}…", show_time=True):
        return routed(settings.checkpoint_path, settings.checkpoint_sha, settings.dataset_name, limit,
                      tau, threshold, settings.noise_seed)


# Once per process and checkpoint: the timings describe this machine, not a setting, and re-timing
# on every rerun would make the audit's ranking wobble with the machine's load.
@st.cache_resource(show_spinner="Timing every branch on this machine…", max_entries=4)
def time_table(path: str, sha256: str, dataset_name: str) -> TimeTable:
    model, meta = model_and_meta(path, sha256)
    inputs = evaluation_inputs(dataset_name)[:TIME_TABLE_BATCH]
    return measure_time_table(model, inputs, tau=default_setting(meta)[0])


@st.cache_data(show_spinner=False, max_entries=256)
def routed_summary(path: str, sha256: str, dataset_name: str, limit: int, tau: float, threshold: float,
                   noise_seed: int | None, set_name: str, class_names: tuple[str, ...]) -> dict:
    model, _ = model_and_meta(path, sha256)
    key = {"dataset": dataset_name, "limit": limit, "tau": tau, "threshold": threshold, "noise_seed": noise_seed,
           "set": set_name, "classes": class_names, "device": model.device.type}
    return result_cache().get_or_compute(sha256, "summary", key, lambda: summarize(
        routed(path, sha256, dataset_name, limit, tau, threshold, noise_seed), model, set_name, class_names))


def setting_summary(settings: Settings, tau: float | None = None, threshold: float | None = None) -> dict:
    """`summarize` of the evaluation set at the sidebar setting (or the given tau/threshold), cached."""
    return routed_summary(settings.checkpoint_path, settings.checkpoint_sha, settings.dataset_name,
                          settings.eval_limit, settings.tau if tau is None else tau,
                          settings.threshold if threshold is None else threshold, settings.noise_seed,
                          limited_set(settings).name, settings.class_names)


def threshold_sweep(settings: Settings) -> list[dict]:
    """Summaries of the evaluation set at every `SWEEP_THRESHOLDS` value, at the sidebar's tau and noise.

    One threshold at a time, with a progress bar: between two, a newer slider value can stop the run. Heavy
    work (compute_gate): other sessions' slider steps go first.
    """
    text = f"Sweeping {len(SWEEP_THRESHOLDS)} thresholds over {settings.eval_limit:,} images at tau {settings.tau:g}…"
    progress = st.progress(0.0, text=text)
    rows = []
    for done, threshold in enumerate(SWEEP_THRESHOLDS, start=1):
        with heavy_work():
            rows.append(setting_summary(settings, threshold=threshold))
        progress.progress(done / len(SWEEP_THRESHOLDS), text=text)
    progress.empty()
    return rows


@st.cache_data(show_spinner=False, max_entries=256)
def inspection(path: str, sha256: str, image_key: str, _model_input: torch.Tensor, tau: float, threshold: float,
               noise_seed: int | None, force_on: tuple[int, ...] = (), force_off: tuple[int, ...] = ()):
    model, _ = model_and_meta(path, sha256)
    overrides = explorer.branch_overrides(model, list(force_on), list(force_off))
    return explorer.inspect_input(model, _model_input, tau=tau, threshold=threshold, noise_seed=noise_seed,
                                  branch_overrides=overrides)


@st.cache_data(show_spinner=False, max_entries=64)
def attributions(path: str, sha256: str, image_key: str, _model_input: torch.Tensor, target: int, tau: float,
                 threshold: float, method: str, class_names: tuple[str, ...]):
    model, _ = model_and_meta(path, sha256)
    explained = attribution.class_attribution(model, _model_input, target, tau=tau, threshold=threshold,
                                              class_names=class_names, method=method)
    cost = attribution.cost_attribution(model, _model_input, tau=tau, threshold=threshold, method=method)
    return explained, cost


@st.cache_data(show_spinner=False, max_entries=64)
def noise_paths(path: str, sha256: str, image_key: str, _model_input: torch.Tensor, tau: float, threshold: float,
                samples: int, seed: int, class_names: tuple[str, ...]):
    model, _ = model_and_meta(path, sha256)
    return explorer.noise_path_frequencies(model, _model_input, tau=tau, threshold=threshold, samples=samples,
                                           seed=seed, class_names=class_names)


def image_key(prepared: PreparedImage) -> str:
    """Content hash of what the model sees: the cache key of an image's results."""
    return hashlib.sha256(prepared.pixels.numpy().tobytes()).hexdigest()[:16]


def gallery_image(position: int, invert: bool = False) -> PreparedImage:
    """A test image as the model sees it; `invert` flips it (dataset images are never inverted by default)."""
    pixels = evaluation_set().images[position]
    if invert:
        return prepare_image(Image.fromarray(pixels.numpy()), invert=True)
    return prepare_dataset_image(pixels)


@st.cache_data(show_spinner=False, max_entries=16)
def prepared_upload(data: bytes, filename: str, invert: bool | None) -> PreparedImage:
    return image_from_bytes(data, filename, invert=invert)


def uploaded_image(upload, invert: bool | None) -> PreparedImage | None:
    """The prepared upload, or None after showing st.error naming what was wrong."""
    try:
        return prepared_upload(upload.getvalue(), upload.name, invert)
    except ImageRejected as error:
        st.error(f"Could not use this upload: {error}")
        return None


def current_settings() -> Settings:
    return st.session_state["_settings"]


# ---- display helpers ------------------------------------------------------------------------------

def nonzero_delta(text: str) -> str | None:
    """A formatted change ("+0.70%", "-1.234") as a metric's delta, or None when it rounds to nothing:
    Streamlit would draw an arrow for "+0.000"."""
    return None if float(text.strip("+-%")) == 0 else text


def enlarge(pixels, scale: int = 4) -> Image.Image:
    """A crisp, enlarged copy of a small grayscale image (browsers blur small images when scaling)."""
    array = np.asarray(pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels, dtype=np.uint8)
    image = Image.fromarray(array)
    return image.resize((array.shape[1] * scale, array.shape[0] * scale), Image.Resampling.NEAREST)


def crisp(image: Image.Image, side: int = 224) -> Image.Image:
    """Enlarge a small picture with nearest-neighbour sampling; leave large ones alone."""
    if max(image.size) >= side:
        return image
    scale = max(1, side // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def thumbnails(images, captions: list[str], per_row: int = 8) -> None:
    """A grid of enlarged thumbnails with captions."""
    images = list(images)
    for start in range(0, len(images), per_row):
        columns = st.columns(per_row)
        for column, image, caption in zip(columns, images[start:start + per_row], captions[start:start + per_row]):
            column.image(enlarge(image, 3), caption=caption, width="stretch")
