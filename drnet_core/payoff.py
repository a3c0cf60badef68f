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

import math

import torch

from .evaluate import RoutedRun, run_routed
from .model import DRNet


def per_cell_masks(model: DRNet, flat: torch.Tensor) -> list[torch.Tensor]:
    """(N, total branches) -> per cell (N, connections, branches), the layout of a `RoutingTrace`."""
    shape = model.routing_shape()
    chunks = flat.split([connections * branches for connections, branches in shape], dim=1)
    return [chunk.reshape(len(flat), *cell_shape) for chunk, cell_shape in zip(chunks, shape)]


def pattern_stats(masks: torch.Tensor) -> dict:
    """masks: (N, ...) bool. Distinct patterns, the most common one's share, entropy in bits."""
    _, counts = torch.unique(masks.flatten(1), dim=0, return_counts=True)
    shares = counts.double() / counts.sum()
    return {"distinct_patterns": len(counts), "largest_pattern_share": float(shares.max()),
            "entropy_bits": float(-(shares * shares.log2()).sum())}


def routing_health(model: DRNet, run: RoutedRun, *, min_patterns: int = 8, max_share: float = 0.6) -> list[dict]:
    """One row per cell; `collapsed` when the cell shows fewer than `min_patterns` patterns or one
    pattern covers more than `max_share` of the instances."""
    rows = []
    for index, masks in enumerate(per_cell_masks(model, run.path_masks)):
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
    forced = per_cell_masks(model, run.path_masks[permutation])
    overrides = [mask.to(torch.int8) * 2 - 1 for mask in forced]  # +1 run, -1 skip
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
