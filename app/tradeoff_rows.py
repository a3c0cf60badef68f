"""The trade-off view's previews and sweeps at the sidebar's settings: summaries and the threshold sweep on a
fixed, class-stratified subset of the evaluation set (`drnet_core.analysis.preview`), which full-set sweeps
this server has finished, and the next tau steps warmed in the background. The results are cached in `caches`.
"""
from __future__ import annotations

from drnet_core.defaults import TAU_MAX, TAU_MIN
from drnet_app import caches
from drnet_app.evaluation import threshold_sweep
from drnet_app.state import Settings


def preview_summaries(settings: Settings, tau: float, thresholds: tuple[float, ...]) -> list[dict]:
    """`summarize` of the preview subset at tau and each threshold (the sidebar's noise). With noise, the
    preview draws its own noise for its images, so its paths are not the full set's for those images."""
    return caches.preview_sweep(settings.checkpoint, settings.dataset_name, settings.eval_limit, float(tau),
                                settings.noise_seed, tuple(float(h) for h in thresholds), settings.class_names)


def uses_preview(settings: Settings) -> bool:
    """Whether a preview is smaller than the evaluated set, so worth showing first."""
    return len(caches.preview_positions(settings.dataset_name, settings.eval_limit)) < settings.eval_limit


def _sweep_key(settings: Settings) -> tuple:
    return (settings.checkpoint, settings.dataset_name, settings.eval_limit, settings.tau, settings.noise_seed)


def full_sweep_ready(settings: Settings) -> bool:
    """Whether this server has swept the whole evaluated set at the sidebar's tau and noise (then cached)."""
    finished, lock = caches.finished_sweeps()
    with lock:
        return _sweep_key(settings) in finished


def full_sweep(settings: Settings) -> list[dict]:
    """`evaluation.threshold_sweep` over the whole evaluated set, remembered as finished for this server."""
    rows = threshold_sweep(settings)
    finished, lock = caches.finished_sweeps()
    with lock:
        finished.add(_sweep_key(settings))
    return rows


# ---- warming the next tau step ---------------------------------------------------------------------------

TAU_STEP = 0.05  # the sidebar's tau slider


def neighbouring_taus(tau: float) -> list[float]:
    """The taus one slider step away, the likely next settings."""
    return [value for value in (round(tau + TAU_STEP, 2), round(tau - TAU_STEP, 2))
            if TAU_MIN <= value <= TAU_MAX]


def warm_next_tau_steps(settings: Settings, thresholds: tuple[float, ...]) -> None:
    """In the background: the whole set routed at the sidebar's threshold, and the preview curve, at the
    taus one step from the sidebar's, so that the step a class most likely takes next is already cached."""
    for tau in neighbouring_taus(settings.tau):
        key = (settings.checkpoint, settings.dataset_name, settings.eval_limit, tau, settings.threshold,
               settings.noise_seed)

        def work(tau=tau):
            caches.routed(settings.checkpoint, settings.dataset_name, settings.eval_limit, tau, settings.threshold,
                          settings.noise_seed)
            if uses_preview(settings):
                preview_summaries(settings, tau, thresholds)
                preview_summaries(settings, tau, (settings.threshold,))

        caches.warmer().submit(key, work)
