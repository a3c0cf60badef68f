"""The pay-off view's cached rows: the random-routing control, the static baselines, the comparison
table when it fits the current checkpoint, and the held-out sweep that budgets are chosen on.

Cached the way `state` caches: models by path and sha256, results by every setting that changes them, in
memory and in the shared result cache on disk (`state.result_cache`). Sweeps and baselines are heavy work
(`drnet_core.compute_gate`): other sessions' slider steps go first.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from drnet_core.analysis import payoff
from drnet_core.net.baselines import load_baseline
from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, default_device, sha256_of
from drnet_core.compute_gate import heavy_work
from drnet_core.data.datasets import ASSETS, ImageSet, to_model_input
from drnet_core.analysis.evaluate import SWEEP_TAUS, SWEEP_THRESHOLDS, default_setting, run_routed, sweep
from drnet_core.data.held_out import held_out_set

from drnet_app.state import Settings, evaluation_inputs, evaluation_set, model_and_meta, result_cache, routed

BASELINE_DIR = ASSETS / "baselines"
# The checkout this app runs from, and where `scripts/performance_report.py` writes its comparison table
# there. An installed package ships no docs/: the view then computes every row live.
CHECKOUT = Path(__file__).resolve().parent.parent
COMPARISON_TABLE = CHECKOUT / "docs" / "results" / "accuracy_vs_flops.json"


@st.cache_data(show_spinner=False, max_entries=16)
def random_control(path: str, sha256: str, dataset_name: str, limit: int, tau: float, threshold: float,
                   noise_seed: int | None, model_name: str) -> dict:
    """The random-routing control row of one setting (`payoff.random_control_row`)."""
    model, meta = model_and_meta(path, sha256)

    def compute() -> dict:
        run = routed(path, sha256, dataset_name, limit, tau, threshold, noise_seed)
        with heavy_work():
            return payoff.random_control_row(model, evaluation_inputs(dataset_name)[:limit], run,
                                             model_name=model_name, epochs=meta.get("total_epochs", meta.get("epochs")))

    key = {"dataset": dataset_name, "limit": limit, "tau": tau, "threshold": threshold, "noise_seed": noise_seed,
           "model_name": model_name, "device": model.device.type}
    return result_cache().get_or_compute(sha256, "random_control", key, compute)


@st.cache_resource(show_spinner="Loading the baselines…", max_entries=16)
def baseline_model(path: str, sha256: str):
    return load_baseline(path, device=default_device(), fold_batch_norms=True)


@st.cache_data(show_spinner=False, max_entries=8)
def baseline_rows(dataset_name: str, limit: int) -> list[dict]:
    """Every shipped static baseline (assets/baselines) evaluated on the first `limit` evaluation images."""
    images = evaluation_set()
    inputs = evaluation_inputs(dataset_name)[:limit]
    paths = sorted(BASELINE_DIR.glob("*.pt"))
    digests = [sha256_of(path) for path in paths]

    def compute() -> list[dict]:
        rows = []
        for path, digest in zip(paths, digests):
            network, meta = baseline_model(str(path), digest)
            kind = payoff.baseline_kind(network.config.kind)
            with heavy_work():
                run = run_routed(network, inputs, images.labels[:limit], tau=1.0, threshold=0.0)
            name = f"{'static cells' if kind == 'static' else 'plain CNN'} ({path.stem})"
            rows.append(payoff.comparison_row(run, network, kind=kind, name=name,
                                              epochs=meta.get("total_epochs", meta.get("epochs"))))
        return rows

    # Kept under one digest of every baseline file: the rows change when any of them does.
    together = hashlib.sha256("".join(digests).encode()).hexdigest()
    return result_cache().get_or_compute(together, "baseline_rows", {"dataset": dataset_name, "limit": limit,
                                                                    "device": default_device().type}, compute)


def table_baseline_rows(limit: int) -> list[dict] | None:
    """The comparison table's static and plain rows when the table was made on the first `limit` evaluation
    images themselves: the shipped baselines do not depend on a DRNet or its setting, so any tau reuses them."""
    report = payoff.read_comparison_table(COMPARISON_TABLE)
    if report is None or report.get("dataset") != evaluation_set().subset(limit).name:
        return None
    rows = [{**row, "kind": payoff.baseline_kind(str(row.get("kind")))} for row in report["rows"]]
    rows = [row for row in rows if row["kind"] in ("static", "plain")]
    return rows or None


def comparison_table_rows(settings: Settings) -> tuple[list[dict], str] | None:
    """(rows, data set) of the comparison table (docs/results/accuracy_vs_flops.json) when it was made
    for this checkpoint at this tau without noise, on the images the app evaluates on; else None."""
    report = payoff.read_comparison_table(COMPARISON_TABLE)
    if report is None or settings.noise or report.get("dataset") != evaluation_set().name:
        return None
    model, meta = model_and_meta(settings.checkpoint_path, settings.checkpoint_sha)
    rows = payoff.table_rows_for(report, settings.checkpoint_path, model.config.to_dict(), default_setting(meta),
                                 shipped=SHIPPED_CHECKPOINT, root=CHECKOUT)
    if rows is None or not any(row["kind"] == "drnet" and row["tau"] == settings.tau for row in rows):
        return None
    return rows, report["dataset"]


@st.cache_resource(show_spinner="Loading the held-out images…", max_entries=4)
def held_out_images(path: str, sha256: str) -> ImageSet:
    _, meta = model_and_meta(path, sha256)
    return held_out_set(meta)


def recorded_sweep_name(meta: dict) -> str:
    """The set a checkpoint's recorded held-out sweep ran on, named as `held_out_set` names it."""
    count = meta.get("validation_images")
    return (f"{count:,} training images held out of training" if isinstance(count, int) else
            "the training images held out of training") + " (recorded in the checkpoint)"


@st.cache_data(show_spinner=False, max_entries=8)
def held_out_sweep(path: str, sha256: str, limit: int) -> tuple[list[dict], str]:
    """(sweep rows, set name): the default-choosing grid (`evaluate.SWEEP_TAUS` x `SWEEP_THRESHOLDS`) over the
    first `limit` images this checkpoint's run held out of training. Raises DatasetError when unknown."""
    model, _ = model_and_meta(path, sha256)
    images = held_out_images(path, sha256).subset(limit)

    def compute() -> list[dict]:
        with heavy_work():
            return sweep(model, to_model_input(images.images), images.labels, SWEEP_TAUS, SWEEP_THRESHOLDS)

    key = {"set": images.name, "limit": limit, "taus": SWEEP_TAUS, "thresholds": SWEEP_THRESHOLDS,
           "device": model.device.type}
    return result_cache().get_or_compute(sha256, "held_out_sweep", key, compute), images.name
