"""The audit commands of `python -m drnet_core`: `audit` (people's own images), `calibrate-ood` (the
unfamiliar-input warning's calibration) and `sponge` (the worst cost an attacker can force).

Their parsers are in `drnet_core.cli`; the work is in `batch_audit`, `ood_calibration` and `sponge`.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from drnet_core.net.checkpoint import BUNDLED_CHECKPOINTS, SHIPPED_CHECKPOINT, default_device, load_checkpoint, sha256_of
from drnet_core.analysis.evaluate import default_setting

log = logging.getLogger("drnet_core")


def checkpoint_name(path: str | None) -> str:
    """A bundled checkpoint's name ("Shipped", ...), else the file's name."""
    resolved = Path(path).resolve() if path else SHIPPED_CHECKPOINT.resolve()
    for name, bundled in BUNDLED_CHECKPOINTS.items():
        if bundled.resolve() == resolved:
            return name
    return resolved.name


def _load(args):
    path = args.checkpoint or SHIPPED_CHECKPOINT
    model, meta = load_checkpoint(path, device=default_device(), fold_batch_norms=True)
    return model, meta, path, sha256_of(path)


def cmd_calibrate_ood(args) -> int:
    from drnet_core.analysis.ood_calibration import calibrate, save_calibration, stored_path

    model, meta, path, sha = _load(args)
    calibration = calibrate(model, meta, sha, data_dir=args.data_dir, fit_limit=args.fit_limit)
    output = Path(args.output) if args.output else stored_path(sha)
    save_calibration(calibration, output)
    print(json.dumps({**calibration.describe(), "checkpoint": str(path), "output": str(output)}, indent=1))
    return 0


def cmd_audit(args) -> int:
    from drnet_core.analysis import audit
    from drnet_core.analysis.batch_audit import audit_inputs, gather_paths, prepare_set, summary
    from drnet_core.analysis.ood_calibration import calibration_or_none

    model, meta, path, sha = _load(args)
    class_names = tuple(meta.get("class_names", [str(i) for i in range(10)]))
    default_tau, default_threshold = default_setting(meta)
    tau = args.tau if args.tau is not None else default_tau
    threshold = args.threshold if args.threshold is not None else default_threshold
    prepared = prepare_set(gather_paths(args.paths), class_names)
    for skipped in prepared.skipped:
        log.warning("skipped %s: %s", skipped.name, skipped.reason)
    if not len(prepared.names):
        print("error: no usable image among the given paths" + "".join(
            f"\n  {s.name}: {s.reason}" for s in prepared.skipped), file=sys.stderr)
        return 2
    calibration, origin = calibration_or_none(model, meta, sha, path, data_dir=args.data_dir)
    if calibration is None:
        log.warning("%s", origin)
    table = audit_inputs(model, prepared, class_names, tau=tau, threshold=threshold, calibration=calibration)
    name = checkpoint_name(args.checkpoint)
    if args.csv:
        run_like = audit.Setting(tau, threshold)
        sources = ", ".join(str(p) for p in args.paths)
        origin_row = audit.provenance(sha, run_like, f"your images: {sources}", checkpoint_name=name)
        Path(args.csv).write_bytes(audit.to_csv(table, origin_row))
        log.info("wrote %d rows to %s", len(table), args.csv)
    if args.json or not args.csv:
        result = {"checkpoint": name, "checkpoint_sha256": sha, "tau": tau, "threshold": threshold,
                  "ood_calibration": calibration.describe() if calibration else None, "ood_origin": origin,
                  **summary(table, prepared.skipped), "rows": _json_rows(table)}
        print(json.dumps(result, indent=None if args.json else 1))
    return 0


def cmd_sponge(args) -> int:
    from drnet_core.data.datasets import load_test_set
    from drnet_core.analysis.sponge import SPONGE_RESTARTS, SPONGE_STEPS, sponge_search
    from drnet_core.figures.sponge import sponge_sweep_figure

    model, meta, path, sha = _load(args)
    tau, threshold = default_setting(meta)
    test = load_test_set(args.data_dir).subset(args.limit)
    budgets = args.eps or [8 / 255]
    bad = [eps for eps in budgets if not 0.0 <= eps <= 1.0]
    if bad:
        print(f"error: --eps must lie in [0, 1] (pixel units, e.g. 0.0314 for 8/255), got {bad}", file=sys.stderr)
        return 2
    rows = []
    for eps in budgets:
        result = sponge_search(model, test.images, test.labels, eps, tau=tau, threshold=threshold,
                               steps=args.steps or SPONGE_STEPS, restarts=args.restarts or SPONGE_RESTARTS,
                               seed=args.seed, method=args.method)
        rows.append(result.summary())
        log.info("eps %.4f: clean %.3f -> forced %.3f mean MFLOPs (max %.3f), accuracy %.3f", eps,
                 rows[-1]["clean_mean_mflops"], rows[-1]["forced_mean_mflops"], rows[-1]["forced_max_mflops"],
                 rows[-1]["forced_accuracy"])
    if args.figure:
        figure = sponge_sweep_figure(rows)
        if args.figure.endswith(".png"):
            figure.write_image(args.figure)  # needs plotly's image export (kaleido)
        else:
            figure.write_html(args.figure, include_plotlyjs="cdn")  # a small file; plotly.js from its CDN
    output = {"checkpoint": checkpoint_name(args.checkpoint), "checkpoint_sha256": sha, "tau": tau,
              "threshold": threshold, "dataset": test.name, "steps": args.steps or SPONGE_STEPS,
              "restarts": args.restarts or SPONGE_RESTARTS, "seed": args.seed, "method": args.method,
              **(rows[0] if len(rows) == 1 else {"sweep": rows})}
    print(json.dumps(output, indent=None if args.json else 1))
    return 0


def _json_rows(table) -> list[dict]:
    rows = json.loads(table.drop(columns=["index"]).to_json(orient="records"))
    for row in rows:
        row["true"] = None if row["correct"] is None else row["true"]
    return rows


def add_audit_parsers(commands, data_options) -> None:
    """The parsers of `audit`, `calibrate-ood` and `sponge` (argparse tables)."""
    from drnet_core.training.options import positive_int, tau_arg, threshold_arg

    audit = commands.add_parser("audit", help="audit your own images: image files, folders (class sub-folders give "
                                "labels) and zips; one row per image with prediction, cost, path and the "
                                "unfamiliar-input flag")
    audit.add_argument("paths", nargs="+", help="image files, folders or zip archives")
    audit.add_argument("--checkpoint", default=None, help="checkpoint file (default: the shipped one)")
    audit.add_argument("--tau", type=tau_arg, default=None, help="Gumbel-Softmax temperature (default: checkpoint's)")
    audit.add_argument("--threshold", type=threshold_arg, default=None, help="selection threshold in [0, 1]")
    audit.add_argument("--json", action="store_true", help="print one JSON object: summary, skipped inputs, rows")
    audit.add_argument("--csv", default=None, help="write the rows with full provenance to this CSV file")
    data_options(audit)
    audit.set_defaults(func=cmd_audit)

    calibrate = commands.add_parser("calibrate-ood", help="fit the unfamiliar-input warning on the checkpoint's "
                                    "training images, threshold at 95%% of its held-out images passing")
    calibrate.add_argument("--checkpoint", default=None, help="checkpoint file (default: the shipped one)")
    calibrate.add_argument("--output", default=None, help="where to write it (default: assets/ood/<sha256>.npz, "
                           "where the app and `audit` look)")
    calibrate.add_argument("--fit-limit", type=positive_int, default=None,
                           help="fit on a seeded sample of this many training images (default: all)")
    data_options(calibrate)
    calibrate.set_defaults(func=cmd_calibrate_ood)

    sponge = commands.add_parser("sponge", help="projected gradient ascent on the routers' cost within an "
                                 "L-infinity budget, then the executed MFLOPs of a real routed run")
    sponge.add_argument("--checkpoint", default=None, help="checkpoint file (default: the shipped one)")
    sponge.add_argument("--eps", type=float, action="append", default=None,
                        help="L-infinity budget in [0, 1] pixel units; repeat for a sweep (default: 8/255)")
    sponge.add_argument("--limit", type=positive_int, default=300, help="the first N test images (default: 300)")
    sponge.add_argument("--steps", type=positive_int, default=None, help="ascent steps per restart")
    sponge.add_argument("--restarts", type=positive_int, default=None, help="random starts (the costliest is kept)")
    sponge.add_argument("--seed", type=int, default=0, help="seed of the random starts")
    sponge.add_argument("--method", choices=["sponge", "plain"], default="sponge",
                        help="sponge: the executed-cost search (default); plain: 30-step PGD on the expected cost, "
                        "for comparison")
    sponge.add_argument("--json", action="store_true", help="print one JSON object")
    sponge.add_argument("--figure", default=None, help="write the eps sweep figure (HTML or PNG by suffix)")
    data_options(sponge)
    sponge.set_defaults(func=cmd_sponge)
