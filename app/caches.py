"""Every Streamlit cache of the app, and what each is keyed by. The computing is drnet_core's; the functions
here only decide what is kept, for how long and under which key.

- `st.cache_resource`, one object per process shared read-only by every session: the stores on disk
  (uploads, results), models (a DRNet, a baseline) per checkpoint, loaded image sets and their model
  inputs, the unfamiliar-input calibration, this machine's branch timings, and the small registries that
  let one run start from another (recent runs, finished sweeps, the background warmer).
- `st.cache_data`, a copy per caller: results, keyed by the checkpoint and every setting that changes them
  (data set, image count, tau, threshold, noise seed, the view's own choices). The costly ones are kept
  on disk as well (`result_cache`), so a restarted server or another replica reads them back.

A checkpoint is passed as a `state.Checkpoint` and keyed by its path and sha256 alone (`BY_WEIGHTS`).
An argument whose name starts with "_" is not hashed: its content is keyed by the `image_key` beside it.
"""
from __future__ import annotations

import hashlib
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from drnet_core.analysis import attribution, batch_audit, clusters, explorer, payoff, preview, sponge
from drnet_core.analysis.evaluate import (SWEEP_TAUS, SWEEP_THRESHOLDS, RoutedRun, default_setting,
                                          prefix_features, rerun_at_threshold, run_routed, summarize, sweep)
from drnet_core.analysis.ood_calibration import Calibration, calibration_or_none
from drnet_core.compute_gate import heavy_work
from drnet_core.data.datasets import ASSETS, FASHION_CLASSES, ImageSet, load_test_set, to_model_input
from drnet_core.data.held_out import held_out_set
from drnet_core.data.images import PreparedImage, image_from_bytes
from drnet_core.net.baselines import load_baseline
from drnet_core.net.checkpoint import BUNDLED_CHECKPOINTS, default_device, load_checkpoint, sha256_of
from drnet_core.net.cost import TimeTable, measure_time_table
from drnet_app.result_cache import ROUTED_RUN, ResultCache
from drnet_app.state import Checkpoint
from drnet_app.upload_store import UploadStore
from drnet_app.warmer import Warmer

# Streamlit hashes a dataclass by every field, `compare=False` or not: keyed by path and sha256 alone, a
# checkpoint under another label (an upload restored from a link) reuses its loaded model and results.
BY_WEIGHTS = {Checkpoint: lambda checkpoint: (checkpoint.path, checkpoint.sha256)}

UPLOAD_DIR = Path(tempfile.gettempdir()) / "drnet-explorer-checkpoints"
BASELINE_DIR = ASSETS / "baselines"
TIME_TABLE_BATCH = 256  # the batch size `bench` reports; the audit's time estimates are per image in it
RECENT_RUNS_KEPT = 48  # about 2.5 MB each for 10,000 images


# ---- process-wide stores and registries -------------------------------------------------------------

# Once per process: creating a store applies its bounds to what an earlier run left on disk.
@st.cache_resource(show_spinner=False)
def upload_store() -> UploadStore:
    return UploadStore.from_environment(UPLOAD_DIR)


# Under the in-memory caches, one on disk per checkpoint sha256 (drnet_app.result_cache), shared by a
# restarted server and by every replica pointed at the same DRNET_RESULT_CACHE_DIR.
@st.cache_resource(show_spinner=False)
def result_cache() -> ResultCache:
    return ResultCache.from_environment()


@st.cache_data(show_spinner=False, max_entries=8)
def bundled_sha256(path: str) -> str:
    return sha256_of(path)


# Recent runs, for every session: a threshold step from the run at the nearest threshold (same checkpoint,
# images, tau and noise) re-routes only the images whose path changes (`evaluate.rerun_at_threshold`).
@st.cache_resource(show_spinner=False)
def _recent_runs() -> tuple[OrderedDict, threading.Lock]:
    return OrderedDict(), threading.Lock()


@st.cache_resource(show_spinner=False)
def finished_sweeps() -> tuple[set, threading.Lock]:
    """The (checkpoint, data set, limit, tau, noise seed) whose full threshold sweep this server has cached."""
    return set(), threading.Lock()


@st.cache_resource(show_spinner=False)
def warmer() -> Warmer:
    return Warmer()


# ---- models -----------------------------------------------------------------------------------------

# Bounded: every distinct uploaded checkpoint would otherwise stay in memory for the life of the server.
@st.cache_resource(show_spinner="Loading the checkpoint…", max_entries=4, hash_funcs=BY_WEIGHTS)
def model_and_meta(checkpoint: Checkpoint):
    """One model per process and checkpoint, shared read-only by every session (never trained or edited)."""
    bundled = Path(checkpoint.path) in BUNDLED_CHECKPOINTS.values()
    return load_checkpoint(checkpoint.path, device=default_device(), verify_sha256=bundled, fold_batch_norms=True)


@st.cache_resource(show_spinner="Loading the baselines…", max_entries=16, hash_funcs=BY_WEIGHTS)
def baseline_model(checkpoint: Checkpoint):
    return load_baseline(checkpoint.path, device=default_device(), fold_batch_norms=True)


@st.cache_resource(show_spinner="Calibrating the unfamiliar-input warning for this checkpoint…", max_entries=4,
                   hash_funcs=BY_WEIGHTS)
def ood_calibration(checkpoint: Checkpoint) -> tuple[Calibration | None, str]:
    """The checkpoint's stored calibration, one computed now from its training images, or (None, why not)."""
    model, meta = model_and_meta(checkpoint)
    return calibration_or_none(model, meta, checkpoint.sha256, checkpoint.path)


# Once per process and checkpoint: the timings describe this machine, not a setting, and re-timing
# on every rerun would make the audit's ranking wobble with the machine's load.
@st.cache_resource(show_spinner="Timing every branch on this machine…", max_entries=4, hash_funcs=BY_WEIGHTS)
def time_table(checkpoint: Checkpoint, dataset_name: str) -> TimeTable:
    model, meta = model_and_meta(checkpoint)
    inputs = evaluation_inputs(dataset_name)[:TIME_TABLE_BATCH]
    return measure_time_table(model, inputs, tau=default_setting(meta)[0])


# ---- image sets -------------------------------------------------------------------------------------

@st.cache_resource(show_spinner="Loading the evaluation set…")
def evaluation_set() -> ImageSet:
    return load_test_set()


@st.cache_resource(show_spinner=False)
def evaluation_inputs(dataset_name: str) -> torch.Tensor:
    return to_model_input(evaluation_set().images)


# The stem and first reduction of every evaluation image do not depend on tau, the threshold or the
# noise, and are a fifth of a routed evaluation: computed once per checkpoint, a slider step skips
# them. 376 MB for 10,000 Fashion-MNIST images with the shipped architecture, hence few entries.
@st.cache_resource(show_spinner="Preparing the evaluation set for this checkpoint…", max_entries=2,
                   hash_funcs=BY_WEIGHTS)
def evaluation_prefix(checkpoint: Checkpoint, dataset_name: str) -> torch.Tensor:
    model, _ = model_and_meta(checkpoint)
    return prefix_features(model, evaluation_inputs(dataset_name))


@st.cache_resource(show_spinner="Loading the held-out images…", max_entries=4, hash_funcs=BY_WEIGHTS)
def held_out_images(checkpoint: Checkpoint) -> ImageSet:
    _, meta = model_and_meta(checkpoint)
    return held_out_set(meta)


@st.cache_resource(show_spinner=False, max_entries=4)
def preview_positions(dataset_name: str, limit: int) -> torch.Tensor:
    """The preview subset of the first `limit` evaluation images (all of them when too few to preview)."""
    size = preview.preview_size(limit)
    return preview.stratified_positions(evaluation_set().labels[:limit], size) if size else torch.arange(limit)


# ---- results on the evaluation set --------------------------------------------------------------------

@st.cache_data(show_spinner=False, max_entries=64, hash_funcs=BY_WEIGHTS)
def routed(checkpoint: Checkpoint, dataset_name: str, limit: int, tau: float, threshold: float,
           noise_seed: int | None) -> RoutedRun:
    model, _ = model_and_meta(checkpoint)
    key = {"dataset": dataset_name, "limit": limit, "tau": tau, "threshold": threshold, "noise_seed": noise_seed,
           "device": model.device.type}
    run = result_cache().get_or_compute(
        checkpoint.sha256, "routed", key,
        lambda: _route(model, checkpoint, dataset_name, limit, tau, threshold, noise_seed), codec=ROUTED_RUN)
    runs, lock = _recent_runs()
    with lock:
        runs[(checkpoint, dataset_name, limit, tau, noise_seed, threshold)] = run
        runs.move_to_end((checkpoint, dataset_name, limit, tau, noise_seed, threshold))
        while len(runs) > RECENT_RUNS_KEPT:
            runs.popitem(last=False)
    return run


def _route(model, checkpoint: Checkpoint, dataset_name: str, limit: int, tau: float, threshold: float,
           noise_seed: int | None) -> RoutedRun:
    features = evaluation_prefix(checkpoint, dataset_name)[:limit]
    runs, lock = _recent_runs()
    same_routing = (checkpoint, dataset_name, limit, tau, noise_seed)
    with lock:
        bases = [run for key, run in runs.items() if key[:-1] == same_routing]
    if bases:
        nearest = min(bases, key=lambda run: abs(run.threshold - threshold))
        return rerun_at_threshold(model, features, nearest, threshold, from_prefix=True)
    return run_routed(model, features, evaluation_set().labels[:limit], tau=tau, threshold=threshold,
                      noise_seed=noise_seed, from_prefix=True)


@st.cache_data(show_spinner=False, max_entries=256, hash_funcs=BY_WEIGHTS)
def routed_summary(checkpoint: Checkpoint, dataset_name: str, limit: int, tau: float, threshold: float,
                   noise_seed: int | None, set_name: str, class_names: tuple[str, ...]) -> dict:
    model, _ = model_and_meta(checkpoint)
    key = {"dataset": dataset_name, "limit": limit, "tau": tau, "threshold": threshold, "noise_seed": noise_seed,
           "set": set_name, "classes": class_names, "device": model.device.type}
    return result_cache().get_or_compute(checkpoint.sha256, "summary", key, lambda: summarize(
        routed(checkpoint, dataset_name, limit, tau, threshold, noise_seed), model, set_name, class_names))


@st.cache_data(show_spinner=False, max_entries=64, hash_funcs=BY_WEIGHTS)
def preview_sweep(checkpoint: Checkpoint, dataset_name: str, limit: int, tau: float, noise_seed: int | None,
                  thresholds: tuple[float, ...], class_names: tuple[str, ...]) -> list[dict]:
    """`summarize` of the preview subset (`preview_positions`) at tau and each threshold."""
    model, _ = model_and_meta(checkpoint)
    positions = preview_positions(dataset_name, limit)
    features = evaluation_prefix(checkpoint, dataset_name)[positions]
    runs = preview.threshold_sweep_runs(model, features, evaluation_set().labels[positions], tau, thresholds,
                                        noise_seed=noise_seed)
    name = f"a fixed class-stratified preview of {len(positions):,} of these images"
    return [summarize(run, model, name, class_names) for run in runs]


@st.cache_data(show_spinner=False, max_entries=16, hash_funcs=BY_WEIGHTS)
def random_control(checkpoint: Checkpoint, dataset_name: str, limit: int, tau: float, threshold: float,
                   noise_seed: int | None, model_name: str) -> dict:
    """The random-routing control row of one setting (`payoff.random_control_row`)."""
    model, meta = model_and_meta(checkpoint)

    def compute() -> dict:
        run = routed(checkpoint, dataset_name, limit, tau, threshold, noise_seed)
        with heavy_work():
            return payoff.random_control_row(model, evaluation_inputs(dataset_name)[:limit], run,
                                             model_name=model_name, epochs=meta.get("total_epochs", meta.get("epochs")))

    key = {"dataset": dataset_name, "limit": limit, "tau": tau, "threshold": threshold, "noise_seed": noise_seed,
           "model_name": model_name, "device": model.device.type}
    return result_cache().get_or_compute(checkpoint.sha256, "random_control", key, compute)


@st.cache_data(show_spinner=False, max_entries=8)
def baseline_rows(dataset_name: str, limit: int) -> list[dict]:
    """Every shipped static baseline (assets/baselines) evaluated on the first `limit` evaluation images."""
    images = evaluation_set()
    inputs = evaluation_inputs(dataset_name)[:limit]
    baselines = [Checkpoint(str(path), sha256_of(path), path.stem) for path in sorted(BASELINE_DIR.glob("*.pt"))]

    def compute() -> list[dict]:
        rows = []
        for baseline in baselines:
            network, meta = baseline_model(baseline)
            kind = payoff.baseline_kind(network.config.kind)
            with heavy_work():
                run = run_routed(network, inputs, images.labels[:limit], tau=1.0, threshold=0.0)
            name = f"{'static cells' if kind == 'static' else 'plain CNN'} ({baseline.name})"
            rows.append(payoff.comparison_row(run, network, kind=kind, name=name,
                                              epochs=meta.get("total_epochs", meta.get("epochs"))))
        return rows

    # Kept under one digest of every baseline file: the rows change when any of them does.
    together = hashlib.sha256("".join(baseline.sha256 for baseline in baselines).encode()).hexdigest()
    return result_cache().get_or_compute(together, "baseline_rows", {"dataset": dataset_name, "limit": limit,
                                                                    "device": default_device().type}, compute)


@st.cache_data(show_spinner=False, max_entries=8, hash_funcs=BY_WEIGHTS)
def held_out_sweep(checkpoint: Checkpoint, limit: int) -> tuple[list[dict], str]:
    """(sweep rows, set name): the default-choosing grid (`evaluate.SWEEP_TAUS` x `SWEEP_THRESHOLDS`) over the
    first `limit` images this checkpoint's run held out of training. Raises DatasetError when unknown."""
    model, _ = model_and_meta(checkpoint)
    images = held_out_images(checkpoint).subset(limit)

    def compute() -> list[dict]:
        with heavy_work():
            return sweep(model, to_model_input(images.images), images.labels, SWEEP_TAUS, SWEEP_THRESHOLDS)

    key = {"set": images.name, "limit": limit, "taus": SWEEP_TAUS, "thresholds": SWEEP_THRESHOLDS,
           "device": model.device.type}
    return result_cache().get_or_compute(checkpoint.sha256, "held_out_sweep", key, compute), images.name


@st.cache_data(show_spinner=False, max_entries=32, hash_funcs=BY_WEIGHTS)
def clustered(checkpoint: Checkpoint, dataset_name: str, limit: int, tau: float, threshold: float,
              noise_seed: int | None, kind: str, method: str, metric: str, k: int, embedding: str):
    """(clustering, 2-D embedding, routing vectors) of the routed evaluation set."""
    run = routed(checkpoint, dataset_name, limit, tau, threshold, noise_seed)
    vectors = clusters.routing_vectors(run, kind)
    result = clusters.cluster_routes(vectors, k, method=method, metric=metric)
    return result, clusters.embed_2d(vectors, method=embedding), vectors


@st.cache_data(show_spinner="Scoring the evaluation set for unfamiliar inputs…", max_entries=8,
               hash_funcs=BY_WEIGHTS)
def evaluation_ood_scores(checkpoint: Checkpoint, dataset_name: str, limit: int):
    """The unfamiliar-input score of the first `limit` evaluation images, or None without a calibration."""
    calibration, _ = ood_calibration(checkpoint)
    if calibration is None:
        return None
    model, _ = model_and_meta(checkpoint)
    return calibration.scores(model, evaluation_inputs(dataset_name)[:limit])


@st.cache_data(show_spinner="Searching for the costliest nearby images (about a second per image and budget)…",
               max_entries=16, hash_funcs=BY_WEIGHTS)
def sponge_sweep(checkpoint: Checkpoint, limit: int, budgets: tuple[float, ...]) -> list[dict]:
    """`SpongeResult.summary()` per eps over the first `limit` evaluation images, at the checkpoint's default."""
    model, meta = model_and_meta(checkpoint)
    tau, threshold = default_setting(meta)
    images = evaluation_set()
    return [sponge.sponge_search(model, images.images[:limit], images.labels[:limit], eps, tau=tau,
                                 threshold=threshold).summary() for eps in budgets]


# ---- results on one image, or on people's own images ----------------------------------------------------

@st.cache_data(show_spinner=False, max_entries=16)
def prepared_upload(data: bytes, filename: str, invert: bool | None) -> PreparedImage:
    return image_from_bytes(data, filename, invert=invert)


@st.cache_data(show_spinner=False, max_entries=256, hash_funcs=BY_WEIGHTS)
def inspection(checkpoint: Checkpoint, image_key: str, _model_input: torch.Tensor, tau: float, threshold: float,
               noise_seed: int | None, force_on: tuple[int, ...] = (), force_off: tuple[int, ...] = ()):
    model, _ = model_and_meta(checkpoint)
    overrides = explorer.branch_overrides(model, list(force_on), list(force_off))
    return explorer.inspect_input(model, _model_input, tau=tau, threshold=threshold, noise_seed=noise_seed,
                                  branch_overrides=overrides)


@st.cache_data(show_spinner=False, max_entries=64, hash_funcs=BY_WEIGHTS)
def attributions(checkpoint: Checkpoint, image_key: str, _model_input: torch.Tensor, target: int, tau: float,
                 threshold: float, method: str, class_names: tuple[str, ...]):
    model, _ = model_and_meta(checkpoint)
    explained = attribution.class_attribution(model, _model_input, target, tau=tau, threshold=threshold,
                                              class_names=class_names, method=method)
    cost = attribution.cost_attribution(model, _model_input, tau=tau, threshold=threshold, method=method)
    return explained, cost


@st.cache_data(show_spinner=False, max_entries=64, hash_funcs=BY_WEIGHTS)
def noise_paths(checkpoint: Checkpoint, image_key: str, _model_input: torch.Tensor, tau: float, threshold: float,
                samples: int, seed: int, class_names: tuple[str, ...]):
    model, _ = model_and_meta(checkpoint)
    return explorer.noise_path_frequencies(model, _model_input, tau=tau, threshold=threshold, samples=samples,
                                           seed=seed, class_names=class_names)


@st.cache_data(show_spinner=False, max_entries=256, hash_funcs=BY_WEIGHTS)
def image_ood_score(checkpoint: Checkpoint, image_key: str, _model_input: torch.Tensor) -> float | None:
    """One prepared image's unfamiliar-input score, or None without a calibration."""
    calibration, _ = ood_calibration(checkpoint)
    if calibration is None:
        return None
    model, _ = model_and_meta(checkpoint)
    return float(calibration.scores(model, _model_input)[0])


@st.cache_data(show_spinner="Searching for the costliest nearby image…", max_entries=32, hash_funcs=BY_WEIGHTS)
def sponge_one(checkpoint: Checkpoint, image_key: str, _pixels: torch.Tensor, eps: float, tau: float,
               threshold: float) -> sponge.SpongeResult:
    """The worst-case search for one image (uint8 (28, 28)) at the given setting."""
    model, _ = model_and_meta(checkpoint)
    return sponge.sponge_search(model, _pixels.unsqueeze(0), torch.tensor([-1]), eps, tau=tau, threshold=threshold)


@dataclass(frozen=True)
class Upload:
    """An uploaded file's name and bytes: hashable content for the cache, the shape `gather_uploads` reads."""

    name: str
    data: bytes

    def getvalue(self) -> bytes:
        return self.data


@st.cache_data(show_spinner="Reading and routing your images…", max_entries=8, hash_funcs=BY_WEIGHTS)
def uploaded_audit(checkpoint: Checkpoint, dataset_name: str, uploads: tuple[Upload, ...], tau: float,
                   threshold: float):
    """(table, pixels (N, 28, 28), skipped inputs) of a batch audit of the uploaded files; the time
    estimates come from `time_table` on `dataset_name`."""
    model, meta = model_and_meta(checkpoint)
    class_names = tuple(meta.get("class_names", FASHION_CLASSES))
    prepared = batch_audit.prepare_set(batch_audit.gather_uploads(uploads), class_names)
    if not prepared.names:
        return None, prepared.pixels, prepared.skipped
    calibration, _ = ood_calibration(checkpoint)
    table = batch_audit.audit_inputs(model, prepared, class_names, tau=tau, threshold=threshold,
                                     calibration=calibration, time_table=time_table(checkpoint, dataset_name))
    return table, prepared.pixels, prepared.skipped
