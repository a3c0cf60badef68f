"""Accuracy per FLOP: the DRNet over thresholds against static baselines, on the full test split.

    python -m scripts.performance_report                       # shipped, pooling and small DRNet, assets/baselines/*.pt
    python -m scripts.performance_report --checkpoint X.pt Y.pt --baselines a.pt b.pt

Writes docs/results/accuracy_vs_flops.json (every figure in the tables of docs/PERFORMANCE.md) and
docs/accuracy_vs_flops.png (accuracy vs mean multiply-adds: each DRNet's curve over thresholds at its
default tau, the static baselines as points). Latency is the median wall time of a forward at batch 1
(averaged over `--single-images` images) and at batch 256, warm, under torch.inference_mode.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

from drnet_core.net.baselines import load_baseline
from drnet_core.runtime import configure_cpu_memory
from drnet_core.cli.bench import machine_info
from drnet_core.net.cost import median_seconds
from drnet_core.net.checkpoint import (BUNDLED_CHECKPOINTS, SHIPPED_CHECKPOINT, default_device, load_checkpoint,
                                   sha256_of, total_epochs)
from drnet_core.data.datasets import load_test_set, to_model_input
from drnet_core.defaults import BATCH_SIZE
from drnet_core.analysis.evaluate import default_setting, run_routed
from drnet_core.analysis.payoff import (acceptance, baseline_kind, comparison_row, cost_against_difficulty,
                               random_control_row, routing_health)

log = logging.getLogger("performance_report")
THRESHOLDS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


@torch.inference_mode()
def measured_latency(model, inputs: torch.Tensor, *, tau: float, threshold: float, single_images: int,
                     repeats: int) -> dict:
    device = model.device
    singles = [inputs[i:i + 1].to(device) for i in range(single_images)]
    batch = inputs[:BATCH_SIZE].to(device)
    one = median_seconds(lambda: [model(x, tau=tau, threshold=threshold) for x in singles], warmup=1,
                         repeats=repeats, device=device) / len(singles)
    many = median_seconds(lambda: model(batch, tau=tau, threshold=threshold), warmup=1, repeats=repeats, device=device)
    return {"latency_batch_1_ms": 1e3 * one, f"latency_batch_{BATCH_SIZE}_ms": 1e3 * many}


def evaluate_row(model, inputs, labels, *, name: str, kind: str, tau: float, threshold: float, epochs,
                 single_images: int, repeats: int) -> tuple[dict, object]:
    run = run_routed(model, inputs, labels, tau=tau, threshold=threshold)
    row = comparison_row(run, model, name=name, kind=kind, epochs=epochs)
    row.update(measured_latency(model, inputs, tau=tau, threshold=threshold, single_images=single_images,
                                repeats=repeats))
    log.info("%s", row)
    return row, run


def plot(rows: list[dict], path: Path, title: str, defaults: dict[str, float]) -> None:
    """One curve per DRNet (its default tau, threshold varied, its default ringed); baselines as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    figure, axes = plt.subplots(figsize=(10, 4.5), dpi=120)
    for model_name, color in zip(defaults, ("tab:blue", "tab:purple", "tab:red", "tab:brown")):
        drnet = sorted((r for r in rows if r["kind"] == "drnet" and r["model"] == model_name),
                       key=lambda r: r["mean_mflops"])
        axes.plot([r["mean_mflops"] for r in drnet], [100 * r["accuracy"] for r in drnet], "o-", color=color,
                  label=f"{model_name}, tau={drnet[0]['tau']:g}, threshold varied")
        shuffled = sorted((r for r in rows if r["kind"] == "random" and r["model"] == model_name),
                          key=lambda r: r["mean_mflops"])
        axes.plot([r["mean_mflops"] for r in shuffled], [100 * r["accuracy"] for r in shuffled], "x:", color=color,
                  alpha=0.6, label=f"{model_name}, its paths dealt out at random")
        # Thresholds above ~0.05 crowd into one spot; label the ends of the curve and the default only.
        below = {drnet[0]["threshold"]}
        labelled = below | {drnet[-1]["threshold"]}
        for r in drnet:
            if r["threshold"] == defaults[model_name]:
                axes.scatter([r["mean_mflops"]], [100 * r["accuracy"]], s=140, facecolors="none", edgecolors=color,
                             zorder=4, label=f"{model_name} default (threshold {r['threshold']:g})")
            elif r["threshold"] in labelled:
                axes.annotate(f"threshold {r['threshold']:g}", (r["mean_mflops"], 100 * r["accuracy"]),
                              textcoords="offset points", xytext=(-10, -14 if r["threshold"] in below else 8),
                              fontsize=7, color=color)
    # Marker by kind, colour by network: the baselines of each DRNet sit near that DRNet's curve.
    markers = {"static": "s", "plain": "^"}
    baselines = [r for r in rows if r["kind"] in markers]
    for r, color in zip(baselines, ("tab:orange", "tab:green", "tab:olive", "tab:cyan", "tab:pink", "tab:gray")):
        axes.scatter([r["mean_mflops"]], [100 * r["accuracy"]], marker=markers[r["kind"]], s=60, color=color,
                     zorder=3, label=f"{r['name']} ({r['params']:,} params)")
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(FixedLocator([1.5, 2, 3, 5, 8, 13, 27]))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.set_xlabel("mean multiply-adds per image (millions, log scale)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))  # outside: the curves span the plot
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def drnet_curve(checkpoint: str | None, inputs, labels, args, device) -> tuple[list[dict], dict]:
    """A DRNet's rows over the thresholds at its default tau, each with its random-routing control, and
    its entry in the report (its default setting and the checks made there)."""
    model, meta = load_checkpoint(checkpoint, device=device, fold_batch_norms=True)
    model_name = "DRNet " + (Path(checkpoint).stem if checkpoint else "(shipped)")
    tau, default_threshold = default_setting(meta)
    epochs = total_epochs(meta)
    rows, checks = [], {}
    for threshold in sorted(set(args.thresholds) | {default_threshold} - {None}):
        row, run = evaluate_row(model, inputs, labels, name=f"{model_name} threshold {threshold:g}",
                                kind="drnet", tau=tau, threshold=threshold, epochs=epochs,
                                single_images=args.single_images, repeats=args.repeats)
        # The router's paths dealt out at random: the same cost distribution, blind to the input.
        control = random_control_row(model, inputs, run, model_name=model_name, epochs=epochs)
        rows += [dict(model=model_name, **row), control]
        if threshold == default_threshold:
            checks = {"routing_health": routing_health(model, run), "cost_against_difficulty":
                      cost_against_difficulty(run), "random_routing_accuracy": control["accuracy"]}
    where = Path(checkpoint).resolve() if checkpoint else None
    shown = "shipped" if where is None else str(where.relative_to(ROOT) if where.is_relative_to(ROOT) else where)
    return rows, {"model": model_name, "checkpoint": shown, "sha256": sha256_of(checkpoint or SHIPPED_CHECKPOINT),
                  "config": model.config.to_dict(), "default": {"tau": tau, "threshold": default_threshold},
                  "epochs": epochs, "default_checks": checks}


def baseline_row(path: str, inputs, labels, args, device) -> dict:
    baseline, baseline_meta = load_baseline(path, device=device, fold_batch_norms=True)
    kind = baseline_kind(baseline.config.kind)
    name = {"static": "static cells", "plain": "plain CNN"}[kind] + f" ({Path(path).stem})"
    row, _ = evaluate_row(baseline, inputs, labels, name=name, kind=kind, tau=1.0, threshold=0.0,
                          epochs=total_epochs(baseline_meta), single_images=args.single_images, repeats=args.repeats)
    row.update(checkpoint=str(Path(path).relative_to(ROOT) if Path(path).is_absolute() else path),
               config=baseline.config.to_dict())
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", nargs="*", default=None,
                        help="DRNet checkpoints, one curve each (default: the shipped one, "
                             "assets/drnet_fashion_pooling.pt and assets/drnet_fashion_small.pt, the models the "
                             "baselines were matched to)")
    parser.add_argument("--baselines", nargs="*", default=None,
                        help="baseline checkpoints (default: assets/baselines/*.pt)")
    parser.add_argument("--thresholds", type=float, nargs="*", default=list(THRESHOLDS))
    parser.add_argument("--single-images", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=str(ROOT / "docs" / "results" / "accuracy_vs_flops.json"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "accuracy_vs_flops.png"))
    args = parser.parse_args(argv)
    configure_cpu_memory()  # as the CLI and the app do
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    device = default_device()
    test = load_test_set(args.data_dir)
    inputs = to_model_input(test.images)
    others = [str(path) for path in BUNDLED_CHECKPOINTS.values() if path != SHIPPED_CHECKPOINT and path.is_file()]
    rows, drnets, defaults = [], [], {}
    for checkpoint in args.checkpoint or [None] + others:
        drnet_rows, entry = drnet_curve(checkpoint, inputs, test.labels, args, device)
        rows += drnet_rows
        drnets.append(entry)
        defaults[entry["model"]] = entry["default"]["threshold"]
    baseline_paths = args.baselines if args.baselines is not None else sorted(
        str(p) for p in (ROOT / "assets" / "baselines").glob("*.pt"))
    rows += [baseline_row(path, inputs, test.labels, args, device) for path in baseline_paths]
    first = drnets[0]
    default_row = next(r for r in rows if r["model"] == first["model"] and r["kind"] == "drnet"
                       and r["threshold"] == first["default"]["threshold"])
    first["acceptance"] = acceptance(default_row, rows, first["default_checks"])
    report = {"dataset": test.name, "drnets": drnets, "machine": machine_info(device), "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    plot(rows, Path(args.plot), f"Accuracy vs cost on {test.name}", defaults)
    print(f"wrote {args.output} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
