"""Command line: `python -m drnet_core <command> --help`.

  train     train a DRNet (resumable; torchrun for several processes)
  evaluate  accuracy and executed FLOPs of a checkpoint at one (tau, threshold), as JSON
  sweep     the accuracy/FLOPs trade-off over a grid of tau and threshold (CSV or JSON)
  subset    rebuild the shipped class-balanced test subset from the installed dataset
  bench     wall-clock cost of dense vs routed inference, router overhead, training speed
  baseline  train a static baseline (fixed-branch cells or a plain CNN) the way the DRNet trains
  trace     one row per image (prediction, cost, path, every branch's weight) as Parquet or CSV
  app       serve the Streamlit app

Installed with pip, `drnet <command>` is the same command.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

from .checkpoint import CheckpointError, default_device, load_checkpoint
from .config import COST_MEASURES, PRESETS, TRAIN_PHASES, preset
from .data import DatasetError
from .evaluate import EVAL_BATCH_SIZE, SWEEP_TAUS, SWEEP_THRESHOLDS, default_setting
from .monitor import DEFAULT_ROUTING_EVERY
from .runtime import configure_cpu_memory

log = logging.getLogger("drnet_core")


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _tau(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"tau must be > 0, got {text}")
    return value


def _threshold(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be in [0, 1], got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _branch_names(text: str) -> tuple[str, ...]:
    from .ops import OPS

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in OPS]
    if unknown or not names or len(set(names)) < len(names):
        problem = (f"unknown {', '.join(map(repr, unknown))}" if unknown else
                   "no branch named" if not names else "a branch named twice")
        raise argparse.ArgumentTypeError(f"{problem}; expected comma-separated branch types from: {', '.join(OPS)}")
    return names


PROGRESS_SETTINGS = ("auto", "on", "off")


def _show_progress(args, *, auto: bool = True) -> bool:
    """Progress bars: --progress on or off; auto draws them only where a person watches, when stderr is a
    terminal and, under torchrun, in rank 0, so that logs under CI or torchrun stay one line per event.
    `auto=False`: a command whose output is for programs (--json) stays quiet unless asked."""
    setting = "off" if getattr(args, "no_progress", False) else getattr(args, "progress", "auto")
    if setting == "auto":
        return auto and sys.stderr.isatty() and int(os.environ.get("RANK", "0")) == 0
    return setting == "on"


def _eval_set(args, meta: dict):
    from .data import load_split, load_test_set, to_model_input

    dataset = meta.get("dataset", "fashion-mnist")
    if getattr(args, "split", "test") == "held-out":
        from .train import held_out_set

        test = held_out_set(meta, args.data_dir)
    else:
        test = load_test_set(args.data_dir) if dataset == "fashion-mnist" else load_split(dataset, "test", args.data_dir)
    test = test.subset(args.limit)
    return test, to_model_input(test.images, dataset)


TRAIN_OVERRIDES = {"epochs": int, "seed": int, "batch_size": int, "lr": float, "cost_weight": float,
                   "balance_weight": float, "train_threshold": float, "threshold_warmup_epochs": float,
                   "tau_start": _tau, "tau_end": _tau, "limit": int, "val_size": int, "cost_measure": str,
                   "phase": str, "random_paths": int, "random_path_keep": float, "target_mflops": float,
                   "budget_weight": float, "gate_weight": float}
CHOICES = {"cost_measure": COST_MEASURES, "phase": TRAIN_PHASES}


def cmd_train(args) -> int:
    from .train import train

    chosen = preset(args.preset)
    model_config = replace(chosen.model, branches=args.branches) if args.branches else chosen.model
    overrides = {key: getattr(args, key) for key in TRAIN_OVERRIDES if getattr(args, key) is not None}
    if args.init_from:
        overrides["init_from"] = args.init_from
    try:
        train_config = chosen.train.__class__(**{**chosen.train.to_dict(), **overrides})
        meta = train(model_config, train_config, args.output, dataset=args.dataset, data_dir=args.data_dir,
                     progress=_show_progress(args), evaluate_test=not args.skip_test, log_dir=args.log_dir,
                     log_every=args.log_every)
    except ValueError as error:  # an invalid setting, a resume file of another config, an --init-from of another architecture
        print(f"error: {error}", file=sys.stderr)
        return 2
    if meta:
        print(json.dumps({k: v for k, v in meta.items() if k not in ("history", "validation_sweep", "train_config", "branch_ms")},
                         indent=2))
    return 0


def cmd_select_default(args) -> int:
    from .train import reselect_default

    meta = reselect_default(args.checkpoint, args.output or args.checkpoint, data_dir=args.data_dir,
                            progress=_show_progress(args))
    print(json.dumps({"default_tau": meta["default_tau"], "default_threshold": meta["default_threshold"],
                      "default_selection": meta["default_selection"], "test_default": meta.get("test_default"),
                      "test_dense": meta.get("test_dense")}, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from .distributed import DistributedContext, run_routed_sharded
    from .evaluate import summarize
    from .routing_graph import branch_labels

    ctx = DistributedContext()  # under torchrun the set is sharded across the processes
    ctx.quiet_other_ranks()
    model, meta = load_checkpoint(args.checkpoint, device=ctx.device if ctx.distributed else default_device(),
                                  fold_batch_norms=True)
    default_tau, default_threshold = default_setting(meta)
    tau = args.tau if args.tau is not None else default_tau
    threshold = args.threshold if args.threshold is not None else default_threshold
    test, inputs = _eval_set(args, meta)
    run = run_routed_sharded(model, inputs, test.labels, tau=tau, threshold=threshold, noise_seed=args.noise_seed,
                             batch_size=args.batch_size, progress=_show_progress(args, auto=not args.json), ctx=ctx)
    ctx.close()
    if not ctx.is_main:
        return 0
    summary = summarize(run, model, test.name, tuple(meta.get("class_names", [str(i) for i in range(10)])))
    summary["checkpoint"] = str(args.checkpoint or "shipped")
    # Which parts of the network this setting uses, and for how many of the images.
    summary["branch_usage"] = dict(zip(branch_labels(model), run.path_masks.float().mean(dim=0).tolist()))
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['dataset']}: accuracy {summary['accuracy']:.4f} at tau={tau:g}, threshold={threshold:g}")
        print(f"mean {summary['mean_mflops']:.3f} MFLOPs (multiply-adds) of {summary['dense_mflops']:.3f} dense "
              f"({100 * summary['mflops_fraction_of_dense']:.1f}%), CV {summary['mflops_cv']:.3f}, "
              f"{summary['distinct_paths']} distinct paths, {summary['mean_active_params']:,.0f} of "
              f"{summary['dense_params']:,} parameters active")
        for name, row in summary["per_class"].items():
            print(f"  {name:12s} accuracy {row['accuracy']:.3f}  {row['mean_mflops']:.3f} MFLOPs")
    return 0


def cmd_sweep(args) -> int:
    from .distributed import DistributedContext, sweep_sharded

    ctx = DistributedContext()  # under torchrun every setting's evaluation is sharded
    ctx.quiet_other_ranks()
    model, meta = load_checkpoint(args.checkpoint, device=ctx.device if ctx.distributed else default_device(),
                                  fold_batch_norms=True)
    test, inputs = _eval_set(args, meta)
    rows = sweep_sharded(model, inputs, test.labels, args.taus, args.thresholds, progress=_show_progress(args),
                         batch_size=args.batch_size, ctx=ctx)
    ctx.close()
    if not ctx.is_main:
        return 0
    for row in rows:
        row["dataset"] = test.name
    text = json.dumps(rows, indent=1) if args.format == "json" else None
    if args.format == "csv":
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    if args.output:
        Path(args.output).write_text(text)
        log.info("wrote %d rows to %s", len(rows), args.output)
    else:
        sys.stdout.write(text)
    return 0


def cmd_bench(args) -> int:
    """Dense vs routed wall time, router overhead, evaluation and training throughput (drnet_core.bench)."""
    from .bench import format_table, run_bench

    model, meta = load_checkpoint(args.checkpoint, device=default_device(), fold_batch_norms=True)
    result = run_bench(model, meta, data_dir=args.data_dir, eval_images=args.limit, warmup=args.warmup,
                       repeats=args.repeats, single_images=args.single_images, big_batch=args.big_batch,
                       train_steps=args.train_steps, tau=args.tau, threshold=args.threshold)
    result["settings"]["checkpoint"] = str(args.checkpoint or "shipped")
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


def cmd_baseline(args) -> int:
    """Train a static baseline the way the DRNet preset is trained (see drnet_core.baselines)."""
    from .baselines import BaselineConfig, build_baseline, most_picked_branches, plain_cnn_widths
    from .train import train

    chosen = preset(args.preset)
    overrides = {key: getattr(args, key) for key in ("epochs", "limit", "val_size") if getattr(args, key) is not None}
    train_config = chosen.train.__class__(**{**chosen.train.to_dict(), **overrides})
    base = chosen.model.to_dict()
    if args.kind == "static-cells":
        if args.branches:
            branches = tuple(name.strip() for name in args.branches.split(",") if name.strip())
        else:
            from .data import load_fashion_mnist, to_model_input
            from .train import split_train_val

            drnet, meta = load_checkpoint(args.checkpoint)
            images = load_fashion_mnist("train", args.data_dir)
            _, val_idx = split_train_val(images, train_config.val_size, train_config.seed)
            branches = most_picked_branches(drnet, to_model_input(images.images[val_idx]),
                                            tau=meta.get("default_tau", 1.0), threshold=meta.get("default_threshold", 0.0))
        config = BaselineConfig("static-cells", base=base, branches=branches)
    else:
        target = args.target_mflops
        if target is None:
            _, meta = load_checkpoint(args.checkpoint)
            target = float(meta["test_default"]["mean_mflops"])
        config = BaselineConfig("plain-cnn", base=base, widths=plain_cnn_widths(target, chosen.model))
    try:
        model = build_baseline(config)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log.info("%s baseline: %.3f MFLOPs, %d parameters, config %s", args.kind, model.dense_mflops(),
             model.dense_params(), config.to_dict())
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    try:
        meta = train(config, train_config, args.output, data_dir=args.data_dir, progress=_show_progress(args),
                     select_defaults=False, model=model)
    except ValueError as error:  # e.g. a resume file left by a run with another config
        print(f"error: {error}", file=sys.stderr)
        return 2
    if meta:
        print(json.dumps({"kind": args.kind, "config": config.to_dict(), "epochs": meta["epochs"],
                          "test": meta.get("test_default")}, indent=2))
    return 0


def cmd_subset(args) -> int:
    from .data import write_shipped_subset

    print(write_shipped_subset(args.data_dir))
    return 0


def cmd_trace(args) -> int:
    """One row per image of the evaluated set, with its routing, as Parquet or CSV (drnet_core.trace)."""
    from .checkpoint import SHIPPED_CHECKPOINT, sha256_of
    from .distributed import DistributedContext, run_routed_sharded
    from .evaluate import summarize
    from .trace import TraceOutputError, check_output, trace_metadata, trace_table, write_trace

    try:
        output = check_output(args.output)  # before any work: a wrong suffix is known at once
    except TraceOutputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ctx = DistributedContext()  # under torchrun the set is sharded across the processes, as in evaluate
    ctx.quiet_other_ranks()
    model, meta = load_checkpoint(args.checkpoint, device=ctx.device if ctx.distributed else default_device(),
                                  fold_batch_norms=True)
    tau = args.tau if args.tau is not None else meta.get("default_tau", 1.0)
    threshold = args.threshold if args.threshold is not None else meta.get("default_threshold", 0.0)
    test, inputs = _eval_set(args, meta)
    run = run_routed_sharded(model, inputs, test.labels, tau=tau, threshold=threshold, noise_seed=args.noise_seed,
                             batch_size=args.batch_size, progress=_show_progress(args), ctx=ctx)
    ctx.close()
    if not ctx.is_main:
        return 0
    class_names = tuple(meta.get("class_names", [str(i) for i in range(10)]))
    summary = summarize(run, model, test.name, class_names)
    metadata = trace_metadata(run, summary, checkpoint=str(args.checkpoint or "shipped"),
                              checkpoint_sha256=sha256_of(args.checkpoint or SHIPPED_CHECKPOINT), split=args.split,
                              batch_size=args.batch_size)
    sidecar = write_trace(trace_table(run, model, class_names, test.indices), metadata, output)
    print(f"wrote {summary['n']:,} rows to {output} and its metadata to {sidecar}: {summary['dataset']}, "
          f"accuracy {summary['accuracy']:.4f}, mean {summary['mean_mflops']:.3f} MFLOPs "
          f"at tau={tau:g}, threshold={threshold:g}")
    return 0


def streamlit_command(port: int, address: str | None, extra: list[str]) -> list[str]:
    """`streamlit run` of the app with the project's Streamlit settings, from any working folder.

    Streamlit reads `.streamlit/config.toml` only from the working folder, so its settings are passed
    as options: the upload limit there is the one `drnet_core.images` enforces.
    """
    import tomllib

    from .resources import APP, STREAMLIT_CONFIG

    def option(value) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    settings = tomllib.loads(STREAMLIT_CONFIG.read_text())
    command = [sys.executable, "-m", "streamlit", "run", str(APP / "streamlit_app.py")]
    command += [f"--{section}.{key}={option(value)}" for section, values in settings.items()
                for key, value in values.items()]
    command += [f"--server.port={port}"] + ([f"--server.address={address}"] if address else [])
    return command + [part for part in extra if part != "--"]


def cmd_app(args) -> int:
    command = streamlit_command(args.port, args.address, args.streamlit_options)
    sys.stdout.flush()
    os.execv(command[0], command)  # streamlit takes over this process, and with it Ctrl-C and signals


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m drnet_core", description="DRNet Explorer: dynamic routing networks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    def progress_options(sub):
        sub.add_argument("--progress", choices=PROGRESS_SETTINGS, default="auto",
                         help="progress bars: on, off, or auto (only when stderr is a terminal, and in rank 0 "
                         "under torchrun)")

    def batch_options(sub):
        sub.add_argument("--batch-size", type=_positive_int, default=EVAL_BATCH_SIZE,
                         help="images per forward pass (under torchrun, each process takes whole batches)")

    def data_options(sub):
        sub.add_argument("--data-dir", help="dataset folder (default: $DRNET_DATA, then /usr/share/datasets/fashion-mnist; "
                                            "CIFAR-10: the extracted cifar-10-batches-py folder)")

    train = commands.add_parser("train", help="train a DRNet; rerun the same command to resume")
    train.add_argument("--preset", default="fashion", choices=sorted(PRESETS), help="model and training preset")
    train.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "cifar10"])
    train.add_argument("--output", required=True, help="checkpoint path (its resume file sits beside it)")
    for name, kind in TRAIN_OVERRIDES.items():
        choices = CHOICES.get(name)
        train.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, choices=choices,
                           help="override the preset's value")
    train.add_argument("--init-from", default=None, help="start from this checkpoint's weights (same preset) with a "
                       "fresh optimizer and schedule: fine-tune a finished run")
    train.add_argument("--branches", type=_branch_names, default=None,
                       help="comma-separated branch types every connection holds (default: the preset's); with "
                       "--init-from, a subset of the parent's: a branch-type ablation of a trained network")
    train.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (--progress off)")
    progress_options(train)
    train.add_argument("--log-dir", default=None, help="write TensorBoard scalars into this folder: loss, accuracy, "
                       "cost, tau and lr every epoch, per-cell routing every --log-every steps")
    train.add_argument("--log-every", type=_positive_int, default=DEFAULT_ROUTING_EVERY,
                       help="steps between routing scalars in --log-dir (default: %(default)s)")
    train.add_argument("--skip-test", action="store_true", help="do not evaluate the test split at the end")
    data_options(train)
    train.set_defaults(func=cmd_train)

    select = commands.add_parser("select-default", help="choose a trained checkpoint's default tau/threshold again "
                                 "on its held-out training images (current rule) and rewrite its test figures")
    select.add_argument("--checkpoint", required=True, help="trained checkpoint")
    select.add_argument("--output", default=None, help="where to write it (default: in place)")
    select.add_argument("--no-progress", action="store_true", help="no progress bar (--progress off)")
    progress_options(select)
    data_options(select)
    select.set_defaults(func=cmd_select_default)

    evaluate = commands.add_parser("evaluate", help="accuracy and executed FLOPs at one setting")
    evaluate.add_argument("--checkpoint", default=None, help="checkpoint file (default: the shipped one)")
    evaluate.add_argument("--tau", type=_tau, default=None, help="Gumbel-Softmax temperature (default: checkpoint's)")
    evaluate.add_argument("--threshold", type=_threshold, default=None, help="selection threshold in [0, 1]")
    evaluate.add_argument("--noise-seed", type=int, default=None, help="turn Gumbel noise on with this seed")
    evaluate.add_argument("--limit", type=_positive_int, default=None, help="only the first N images")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    batch_options(evaluate)
    progress_options(evaluate)
    data_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    sweep = commands.add_parser("sweep", help="accuracy/FLOPs over a grid of tau and threshold")
    sweep.add_argument("--checkpoint", default=None)
    sweep.add_argument("--taus", type=_floats, default=list(SWEEP_TAUS))
    sweep.add_argument("--thresholds", type=_floats, default=list(SWEEP_THRESHOLDS))
    sweep.add_argument("--limit", type=_positive_int, default=None)
    sweep.add_argument("--split", choices=["test", "held-out"], default="test",
                       help="test split, or the training images the checkpoint's run held out (where its default "
                       "setting was chosen)")
    sweep.add_argument("--format", choices=["csv", "json"], default="csv")
    sweep.add_argument("--output", help="file to write (default: stdout)")
    batch_options(sweep)
    progress_options(sweep)
    data_options(sweep)
    sweep.set_defaults(func=cmd_sweep)

    bench = commands.add_parser("bench", help="wall-clock cost of dense vs routed inference, and training speed")
    bench.add_argument("--checkpoint", default=None, help="checkpoint file (default: the shipped one)")
    bench.add_argument("--json", action="store_true", help="print one JSON object holding every figure")
    bench.add_argument("--limit", type=_positive_int, default=None, help="evaluate only the first N test images")
    bench.add_argument("--warmup", type=_positive_int, default=2, help="untimed calls before each timing")
    bench.add_argument("--repeats", type=_positive_int, default=5, help="timed calls; the median is reported")
    bench.add_argument("--single-images", type=_positive_int, default=100, help="images timed one at a time")
    bench.add_argument("--big-batch", type=_positive_int, default=256,
                       help="the large batch size timed beside batch 1 (a GPU needs thousands to be busy)")
    bench.add_argument("--train-steps", type=_positive_int, default=5, help="timed training steps")
    bench.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads")
    bench.add_argument("--tau", type=_tau, default=None, help="routed setting's temperature (default: checkpoint's)")
    bench.add_argument("--threshold", type=_threshold, default=None,
                       help="routed setting's threshold (default: checkpoint's)")
    data_options(bench)
    bench.set_defaults(func=cmd_bench)

    baseline = commands.add_parser("baseline", help="train a static baseline (fixed-branch cells or a plain CNN)")
    baseline.add_argument("--kind", required=True, choices=["static-cells", "plain-cnn"])
    baseline.add_argument("--output", required=True, help="checkpoint path (its resume file sits beside it)")
    baseline.add_argument("--preset", default="fashion", choices=sorted(PRESETS), help="architecture and training preset")
    baseline.add_argument("--checkpoint", default=None,
                          help="DRNet whose routing picks the static branches / whose mean cost the CNN targets "
                               "(default: the shipped one)")
    baseline.add_argument("--branches", help="static-cells: comma-separated branch per connection, cell after cell")
    baseline.add_argument("--target-mflops", type=float, default=None, help="plain-cnn: cost to aim at")
    for name in ("epochs", "limit", "val-size"):
        baseline.add_argument(f"--{name}", type=int, default=None, help="override the preset's value")
    baseline.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads")
    baseline.add_argument("--no-progress", action="store_true", help="no progress bar (--progress off)")
    progress_options(baseline)
    data_options(baseline)
    baseline.set_defaults(func=cmd_baseline)

    subset = commands.add_parser("subset", help="rebuild assets/fashion_mnist_test_subset.npz")
    data_options(subset)
    subset.set_defaults(func=cmd_subset)

    trace = commands.add_parser("trace", help="one row per image: prediction, confidence, cost, path and every "
                                "branch's weight, as Parquet or CSV with a JSON metadata sidecar")
    trace.add_argument("--checkpoint", default=None, help="checkpoint file (default: the shipped one)")
    trace.add_argument("--tau", type=_tau, default=None, help="Gumbel-Softmax temperature (default: checkpoint's)")
    trace.add_argument("--threshold", type=_threshold, default=None, help="selection threshold in [0, 1]")
    trace.add_argument("--noise-seed", type=int, default=None, help="turn Gumbel noise on with this seed")
    trace.add_argument("--split", choices=["test", "held-out"], default="test",
                       help="test split, or the training images the checkpoint's run held out")
    trace.add_argument("--limit", type=_positive_int, default=None, help="only the first N images")
    trace.add_argument("--output", required=True, help="file to write: F.parquet or F.csv (metadata: F.parquet.json)")
    trace.add_argument("--batch-size", type=_positive_int, default=EVAL_BATCH_SIZE, help="images per forward pass")
    progress_options(trace)
    data_options(trace)
    trace.set_defaults(func=cmd_trace)

    app = commands.add_parser("app", help="serve the Streamlit app (as `make run` does)")
    app.add_argument("--port", type=_positive_int, default=8501, help="port (default: %(default)s)")
    app.add_argument("--address", default=None, help="address to listen on (default: Streamlit's, every interface)")
    app.add_argument("streamlit_options", nargs=argparse.REMAINDER,
                     help="after --, further `streamlit run` options, e.g. -- --server.baseUrlPath=drnet")
    app.set_defaults(func=cmd_app)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    configure_cpu_memory()
    if getattr(args, "threads", None) is not None:  # train, bench and baseline take --threads
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (DatasetError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
