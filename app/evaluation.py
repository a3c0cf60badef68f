"""What the views evaluate at the sidebar's settings, asked of `caches`: the evaluated images, their routed
run and summary at a setting, the threshold sweep, and one image (a test image or an upload) as the model
sees it. Every page evaluates the same images: by default the whole test split, the set the checkpoint's
recorded test accuracy and the CLI's `evaluate` use.
"""
from __future__ import annotations

import hashlib

import streamlit as st
from PIL import Image

from drnet_core.analysis.evaluate import SWEEP_THRESHOLDS, RoutedRun
from drnet_core.compute_gate import heavy_work
from drnet_core.data.datasets import ImageSet
from drnet_core.data.images import ImageRejected, PreparedImage, prepare_dataset_image, prepare_image
from drnet_app import caches
from drnet_app.state import Settings


def limited_set(settings: Settings) -> ImageSet:
    return caches.evaluation_set().subset(settings.eval_limit)


def routed_run(settings: Settings, tau: float | None = None, threshold: float | None = None,
               limit: int | None = None) -> RoutedRun:
    """The evaluation set routed at the sidebar setting (or the given tau/threshold), with a spinner."""
    tau = settings.tau if tau is None else tau
    threshold = settings.threshold if threshold is None else threshold
    limit = settings.eval_limit if limit is None else min(limit, settings.eval_limit)
    with st.spinner(f"Routing {limit:,} images at tau {tau:g}, threshold {threshold:g}…", show_time=True):
        return caches.routed(settings.checkpoint, settings.dataset_name, limit, tau, threshold, settings.noise_seed)


def setting_summary(settings: Settings, tau: float | None = None, threshold: float | None = None) -> dict:
    """`summarize` of the evaluation set at the sidebar setting (or the given tau/threshold), cached."""
    return caches.routed_summary(settings.checkpoint, settings.dataset_name, settings.eval_limit,
                                 settings.tau if tau is None else tau,
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


def image_key(prepared: PreparedImage) -> str:
    """Content hash of what the model sees: the cache key of an image's results."""
    return hashlib.sha256(prepared.pixels.numpy().tobytes()).hexdigest()[:16]


def gallery_image(position: int, invert: bool = False) -> PreparedImage:
    """A test image as the model sees it; `invert` flips it (dataset images are never inverted by default)."""
    pixels = caches.evaluation_set().images[position]
    if invert:
        return prepare_image(Image.fromarray(pixels.numpy()), invert=True)
    return prepare_dataset_image(pixels)


def uploaded_image(upload, invert: bool | None) -> PreparedImage | None:
    """The prepared upload, or None after showing st.error naming what was wrong."""
    try:
        return caches.prepared_upload(upload.getvalue(), upload.name, invert)
    except ImageRejected as error:
        st.error(f"Could not use this upload: {error}")
        return None
