"""The pay-off view's rows that need no computing: the comparison table's rows when they fit the current
checkpoint and images, and the name of a checkpoint's recorded held-out sweep. The rows computed live
(the random-routing control, the static baselines, the held-out sweep) are cached in `caches`.
"""
from __future__ import annotations

from pathlib import Path

from drnet_core.analysis import payoff
from drnet_core.analysis.evaluate import default_setting
from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT
from drnet_app.caches import evaluation_set, model_and_meta
from drnet_app.state import Settings

# The checkout this app runs from, and where `scripts/performance_report.py` writes its comparison table
# there. An installed package ships no docs/: the view then computes every row live.
CHECKOUT = Path(__file__).resolve().parent.parent
COMPARISON_TABLE = CHECKOUT / "docs" / "results" / "accuracy_vs_flops.json"


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
    model, meta = model_and_meta(settings.checkpoint)
    rows = payoff.table_rows_for(report, settings.checkpoint.path, model.config.to_dict(), default_setting(meta),
                                 shipped=SHIPPED_CHECKPOINT, root=CHECKOUT)
    if rows is None or not any(row["kind"] == "drnet" and row["tau"] == settings.tau for row in rows):
        return None
    return rows, report["dataset"]


def recorded_sweep_name(meta: dict) -> str:
    """The set a checkpoint's recorded held-out sweep ran on, named as `held_out_set` names it."""
    count = meta.get("validation_images")
    return (f"{count:,} training images held out of training" if isinstance(count, int) else
            "the training images held out of training") + " (recorded in the checkpoint)"
