"""Does routing pay off? The checks a DRNet must pass to be worth its routers.

  * routing health: per cell, how many distinct selection patterns occur, the share of the most
    common one and the path entropy; a cell that sends nearly everything one way has collapsed;
  * cost against difficulty: do misclassified inputs cost more than correct ones, and do the
    costliest inputs fail more often than the cheapest;
  * the random-routing control: the same network with every instance's path drawn at random from
    the paths the router chose for the whole set (a permutation across instances), so that
    per-instance cost has exactly the router's distribution but no longer depends on the input.
    If the router's choices matter, the control is less accurate at the same cost.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from drnet_core.net.cell import forcing
from drnet_core.analysis.evaluate import RoutedRun, choose_default_setting, run_routed
from drnet_core.net.model import DRNet


def pattern_shares(patterns: torch.Tensor) -> torch.Tensor:
    """Each distinct row's share of the rows of a (N, D) bool tensor, float64."""
    _, counts = torch.unique(patterns, dim=0, return_counts=True)
    return counts.double() / counts.sum()


def entropy_bits(shares: torch.Tensor) -> float:
    return float(-(shares * shares.log2()).sum()) + 0.0  # + 0.0: no "-0.0"


def pattern_entropy_bits(patterns: torch.Tensor) -> tuple[int, float]:
    """(distinct rows, entropy in bits of the rows' empirical distribution) of a (N, D) bool tensor."""
    if len(patterns) == 0:
        return 0, 0.0
    shares = pattern_shares(patterns)
    return len(shares), entropy_bits(shares)


def pattern_stats(masks: torch.Tensor) -> dict:
    """masks: (N, ...) bool. Distinct patterns, the most common one's share, entropy in bits."""
    shares = pattern_shares(masks.flatten(1))
    return {"distinct_patterns": len(shares), "largest_pattern_share": float(shares.max()),
            "entropy_bits": entropy_bits(shares)}


def routing_health(model: DRNet, run: RoutedRun, *, min_patterns: int = 8, max_share: float = 0.6) -> list[dict]:
    """One row per cell; `collapsed` when the cell shows fewer than `min_patterns` patterns or one
    pattern covers more than `max_share` of the instances."""
    rows = []
    for index, masks in enumerate(model.split_per_cell(run.path_masks)):
        stats = pattern_stats(masks)
        stats["collapsed"] = stats["distinct_patterns"] < min_patterns or stats["largest_pattern_share"] > max_share
        rows.append({"cell": index + 1, **stats})
    return rows


def cost_against_difficulty(run: RoutedRun, deciles: int = 10) -> dict:
    """Mean MFLOPs of misclassified over correct inputs, and error rate by cost decile (cheapest first).

    Deciles are cut by rank (ties broken by position), so each holds a tenth of the inputs even when
    many share one cost.
    """
    correct = run.correct
    wrong_mflops = float(run.mflops[~correct].mean()) if bool((~correct).any()) else math.nan
    right_mflops = float(run.mflops[correct].mean()) if bool(correct.any()) else math.nan
    order = torch.argsort(run.mflops, stable=True)
    rows = []
    for decile, members in enumerate(order.tensor_split(deciles)):
        if len(members):
            rows.append({"decile": decile + 1, "n": len(members),
                         "mean_mflops": float(run.mflops[members].mean()),
                         "error_rate": float(1 - correct[members].float().mean())})
    cheapest, costliest = rows[0]["error_rate"], rows[-1]["error_rate"]
    return {"misclassified_mflops": wrong_mflops, "correct_mflops": right_mflops,
            "misclassified_cost_ratio": wrong_mflops / right_mflops if right_mflops else math.nan,
            "costliest_to_cheapest_error_ratio": costliest / cheapest if cheapest else math.inf,
            "deciles": rows}


def random_routing_run(model: DRNet, inputs: torch.Tensor, run: RoutedRun, *, seed: int = 0) -> RoutedRun:
    """`run`'s network and setting, each instance forced onto another instance's executed path.

    The forced paths are exactly the ones the router executed, permuted, so the set's cost
    distribution is unchanged; the threshold is lifted so that every forced branch runs.
    """
    permutation = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed))
    forced = model.split_per_cell(run.path_masks[permutation])
    overrides = [forcing(mask) for mask in forced]
    return run_routed(model, inputs, run.labels, tau=run.tau, threshold=0.0, noise_seed=run.noise_seed,
                      branch_overrides=overrides)


# The bar a shipped DRNet is held to: accurate within a budget, better than controls of its cost,
# compute that follows difficulty, and no collapsed cell.
TARGETS = {"min_accuracy": 0.945, "max_mflops": 6.0, "control_margin": 0.003, "control_cost_window": 0.10,
           "min_misclassified_cost_ratio": 1.25, "min_costliest_to_cheapest_error_ratio": 2.0}


def acceptance(default_row: dict, rows: list[dict], checks: dict, targets: dict = TARGETS) -> dict:
    """Every target with its measured value and whether it passed.

    `rows`: comparison rows (`kind`, `accuracy`, `mean_mflops`, and `model` for a DRNet's own rows);
    the controls are the static and plain networks and this DRNet's random-routing rows whose mean
    MFLOPs is at most the default's plus `control_cost_window`. `checks`: the default setting's
    `routing_health` and `cost_against_difficulty`.
    """
    budget = default_row["mean_mflops"] * (1 + targets["control_cost_window"])
    controls = [row for row in rows if row["mean_mflops"] <= budget and (
        row["kind"] in ("static", "plain") or (row["kind"] == "random" and row.get("model") == default_row.get("model")))]
    best = max(controls, key=lambda row: row["accuracy"], default=None)
    difficulty = checks["cost_against_difficulty"]

    def check(what: str, measured, required: str, passed: bool) -> dict:
        return {"check": what, "measured": measured, "required": required, "passed": bool(passed)}

    results = [
        check("accuracy at the default", default_row["accuracy"], f">= {targets['min_accuracy']}",
              default_row["accuracy"] >= targets["min_accuracy"]),
        check("mean MFLOPs at the default", default_row["mean_mflops"], f"<= {targets['max_mflops']}",
              default_row["mean_mflops"] <= targets["max_mflops"]),
        check(f"accuracy above the best control of similar or lower cost ({best['name'] if best else 'none'})",
              default_row["accuracy"] - (best["accuracy"] if best else 0.0), f">= {targets['control_margin']}",
              best is None or default_row["accuracy"] - best["accuracy"] >= targets["control_margin"]),
        check("misclassified / correct mean MFLOPs", difficulty["misclassified_cost_ratio"],
              f">= {targets['min_misclassified_cost_ratio']}",
              difficulty["misclassified_cost_ratio"] >= targets["min_misclassified_cost_ratio"]),
        check("error rate, costliest 10% / cheapest 10%", difficulty["costliest_to_cheapest_error_ratio"],
              f">= {targets['min_costliest_to_cheapest_error_ratio']}",
              difficulty["costliest_to_cheapest_error_ratio"] >= targets["min_costliest_to_cheapest_error_ratio"]),
    ]
    results += [check(f"cell {cell['cell']}: distinct patterns, largest pattern's share",
                      [cell["distinct_patterns"], round(cell["largest_pattern_share"], 4)], ">= 8, <= 0.6",
                      not cell["collapsed"]) for cell in checks["routing_health"]]
    return {"checks": results, "passed": all(item["passed"] for item in results)}


# ---- the app's pay-off view: comparison rows, the comparison table, alarms, a budget ---------------

# Older tables name the baseline kinds as `BaselineConfig.kind` does.
_KIND_ALIASES = {"static-cells": "static", "plain-cnn": "plain"}


def comparison_row(run: RoutedRun, network, *, name: str, kind: str, model: str | None = None, epochs=None) -> dict:
    """One accuracy-vs-cost row with the comparison table's fields; `network` a DRNet or a static baseline."""
    row = {"name": name, "kind": kind, "tau": run.tau, "threshold": run.threshold, "epochs": epochs,
           "accuracy": float(run.correct.float().mean()), "mean_mflops": float(run.mflops.mean()),
           "mean_active_params": float(run.active_params.mean()), "params": int(network.dense_params())}
    if model is not None:
        row["model"] = model
    return row


def drnet_curve_rows(model: DRNet, runs: list[RoutedRun], *, model_name: str, epochs=None) -> list[dict]:
    """A DRNet's accuracy-vs-cost curve: one `drnet` row per run (one tau, thresholds varied), cheapest first."""
    rows = [comparison_row(run, model, name=f"{model_name} tau {run.tau:g} threshold {run.threshold:g}",
                           kind="drnet", model=model_name, epochs=epochs) for run in runs]
    return sorted(rows, key=lambda row: (row["tau"], row["mean_mflops"]))


def random_control_row(model: DRNet, inputs: torch.Tensor, run: RoutedRun, *, model_name: str, epochs=None,
                       seed: int = 0) -> dict:
    """The `random` row of `run`: its paths permuted across instances (`random_routing_run`)."""
    control = random_routing_run(model, inputs, run, seed=seed)
    # The control runs at threshold 0 with forced paths; report it at the setting whose paths it deals out.
    control.threshold = run.threshold
    return comparison_row(control, model, kind="random", model=model_name, epochs=epochs,
                          name=f"{model_name} tau {run.tau:g} threshold {run.threshold:g}, paths permuted at random")


def baseline_kind(kind: str) -> str:
    """`static` or `plain` for a baseline's config kind (or a table row's kind, old or new spelling)."""
    return _KIND_ALIASES.get(kind, kind)


def read_comparison_table(path: str | Path) -> dict | None:
    """The comparison table `performance_report.py` wrote, or None when there is none or it is unreadable."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or not isinstance(report.get("rows"), list) or not isinstance(
            report.get("drnets"), list):
        return None
    return report


def table_rows_for(report: dict, checkpoint: str | Path, config: dict, default: tuple[float, float], *,
                   shipped: str | Path, root: str | Path) -> list[dict] | None:
    """The table's rows for one checkpoint: its DRNet curve, its random-routing rows, every baseline.

    None when the table was not made for this checkpoint: no entry names this file, or the entry's
    architecture or default setting differs from the checkpoint's (the file changed after the table
    was written). `shipped`: the file the table calls "shipped"; `root`: what its relative paths
    are relative to. Kinds come back as `drnet`, `static`, `plain` or `random`.
    """
    target = Path(checkpoint).resolve()
    config = json.loads(json.dumps(config))  # tuples as the table's JSON lists
    for entry in report["drnets"]:
        named = entry.get("checkpoint")
        if not isinstance(named, str):
            continue
        path = Path(shipped) if named == "shipped" else Path(named) if Path(named).is_absolute() else Path(root) / named
        recorded = entry.get("default") or {}
        if (path.resolve() == target and entry.get("config") == config
                and (recorded.get("tau"), recorded.get("threshold")) == tuple(default)):
            rows = []
            for row in report["rows"]:
                kind = baseline_kind(str(row.get("kind")))
                if (kind in ("drnet", "random") and row.get("model") == entry["model"]) or kind in ("static", "plain"):
                    rows.append({**row, "kind": kind})
            return rows
    return None


def share_text(share: float) -> str:
    """A selection pattern's share as every view writes it: a percentage with two decimals, so that the
    collapse alarm and the table beside it agree (99.98%, never 100.0% beside 99.98%)."""
    return f"{100 * share:.2f}%"


def collapse_alarms(health: list[dict], *, nearly_all: float = 0.95) -> list[dict]:
    """Per `routing_health` row that needs one: level `error` when the cell sends at least `nearly_all`
    of the instances down one pattern (routing there no longer depends on the input), `warning` when
    `routing_health` calls it collapsed (few patterns, or one pattern for most instances)."""
    alarms = []
    for cell in health:
        share, patterns = cell["largest_pattern_share"], cell["distinct_patterns"]
        if share >= nearly_all:
            alarms.append({"cell": cell["cell"], "level": "error",
                           "message": f"Cell {cell['cell']} sends {share_text(share)} of the inputs down one "
                                      f"selection pattern ({patterns} distinct in all): its routing hardly depends on the "
                                      "input."})
        elif cell["collapsed"]:
            alarms.append({"cell": cell["cell"], "level": "warning",
                           "message": f"Cell {cell['cell']} uses only {patterns} distinct selection patterns, the "
                                      f"most common for {share_text(share)} of the inputs: little instance-aware "
                                      "routing there."})
    return alarms


def readable_name(row: dict) -> str:
    """A comparison row's name for a reader: a baseline by what it is (kind, parameters, epochs) rather than
    by its file's stem; a DRNet's own rows keep their names."""
    label = {"static": "static cells", "plain": "plain CNN"}.get(baseline_kind(str(row.get("kind"))))
    if label is None:
        return row["name"]
    details = [f"{row['params']:,} parameters" if row.get("params") else "",
               f"{row['epochs']} epochs" if row.get("epochs") else ""]
    return ", ".join([label] + [detail for detail in details if detail])


SWEEP_ROW_KEYS = ("tau", "threshold", "accuracy", "mean_mflops", "distinct_paths", "mflops_cv")


def recorded_sweep(meta: dict) -> list[dict] | None:
    """The held-out sweep a checkpoint recorded when its default was chosen (`meta["validation_sweep"]`),
    or None when it has none or a row lacks a finite number `setting_for_budget` needs."""
    rows = meta.get("validation_sweep")
    if not isinstance(rows, list) or not rows:
        return None
    for row in rows:
        if not isinstance(row, dict) or not all(isinstance(row.get(key), (int, float)) and math.isfinite(row[key])
                                                for key in SWEEP_ROW_KEYS):
            return None
    return rows


def setting_for_budget(rows: list[dict], max_mflops: float) -> dict:
    """The setting `evaluate.choose_default_setting` picks for a mean-MFLOPs budget, from sweep rows
    (held-out images), with `meets_budget`: False when no setting is that cheap (then the cheapest)."""
    if not rows:
        raise ValueError("no sweep rows to choose from")
    if not math.isfinite(max_mflops) or max_mflops <= 0:
        raise ValueError(f"the budget must be a positive number of MFLOPs, got {max_mflops}")
    chosen = choose_default_setting(rows, max_mflops=max_mflops)
    return {**chosen, "max_mflops": max_mflops, "meets_budget": chosen["mean_mflops"] <= max_mflops}
