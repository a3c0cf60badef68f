"""Command line: `python -m drnet_core <command> --help`.

  train     train a DRNet (resumable; torchrun for several processes)
  evaluate  accuracy and executed FLOPs of a checkpoint at one (tau, threshold), as JSON
  sweep     the accuracy/FLOPs trade-off over a grid of tau and threshold (CSV or JSON)
  subset    rebuild the shipped class-balanced test subset from the installed dataset
  bench     wall-clock cost of dense vs routed inference, router overhead, training speed
  baseline  train a static baseline (fixed-branch cells or a plain CNN) the way the DRNet trains
  trace     one row per image (prediction, cost, path, every branch's weight) as Parquet or CSV
  audit     your own images (files, folders, zips): prediction, cost, path, unfamiliar-input flag
  calibrate-ood  fit the unfamiliar-input warning on held-out training images
  sponge    the worst mean cost an L-infinity-bounded perturbation can force
  app       serve the Streamlit app

Installed with pip, `drnet <command>` is the same command.
"""
from __future__ import annotations

import argparse
import logging
import sys

import torch

from drnet_core.net.checkpoint import CheckpointError
from drnet_core.cli.audit_commands import add_audit_parsers
from drnet_core.cli.commands import (BASELINE_TRAIN_FLAGS, PROGRESS_SETTINGS, cmd_app, cmd_baseline, cmd_bench, cmd_evaluate,
                       cmd_select_default, cmd_subset, cmd_sweep, cmd_trace, cmd_train)
from drnet_core.training.config import PRESETS, TrainConfig
from drnet_core.data.datasets import DATASETS, DEFAULT_DATASET, DatasetError
from drnet_core.defaults import BATCH_SIZE
from drnet_core.analysis.evaluate import SWEEP_TAUS, SWEEP_THRESHOLDS
from drnet_core.training.monitor import DEFAULT_ROUTING_EVERY
from drnet_core.training.options import add_config_flags, branch_names_arg, float_list, positive_int, tau_arg, threshold_arg
from drnet_core.runtime import configure_cpu_memory

log = logging.getLogger("drnet_core")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m drnet_core", description="DRNet Explorer: dynamic routing networks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    def progress_options(sub):
        sub.add_argument("--progress", choices=PROGRESS_SETTINGS, default="auto",
                         help="progress bars: on, off, or auto (only when stderr is a terminal, and in rank 0 "
                         "under torchrun)")

    def batch_options(sub):
        sub.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE,
                         help="images per forward pass (under torchrun, each process takes whole batches)")

    def data_options(sub):
        sub.add_argument("--data-dir", help="dataset folder (default: $DRNET_DATA, then /usr/share/datasets/fashion-mnist; "
                                            "CIFAR-10: the extracted cifar-10-batches-py folder)")

    train = commands.add_parser("train", help="train a DRNet; rerun the same command to resume")
    train.add_argument("--preset", default="fashion", choices=sorted(PRESETS), help="model and training preset")
    train.add_argument("--dataset", default=DEFAULT_DATASET, choices=list(DATASETS), help="what to train on "
                       "(default: %(default)s)")
    train.add_argument("--output", required=True, help="checkpoint path (its resume file sits beside it)")
    add_config_flags(train, TrainConfig)
    train.add_argument("--branches", type=branch_names_arg, default=None,
                       help="comma-separated branch types every connection holds (default: the preset's); with "
                       "--init-from, a subset of the parent's: a branch-type ablation of a trained network")
    train.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (--progress off)")
    progress_options(train)
    train.add_argument("--log-dir", default=None, help="write TensorBoard scalars into this folder: loss, accuracy, "
                       "cost, tau and lr every epoch, per-cell routing every --log-every steps")
    train.add_argument("--log-every", type=positive_int, default=DEFAULT_ROUTING_EVERY,
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
    evaluate.add_argument("--tau", type=tau_arg, default=None, help="Gumbel-Softmax temperature (default: checkpoint's)")
    evaluate.add_argument("--threshold", type=threshold_arg, default=None, help="selection threshold in [0, 1]")
    evaluate.add_argument("--noise-seed", type=int, default=None, help="turn Gumbel noise on with this seed")
    evaluate.add_argument("--limit", type=positive_int, default=None, help="only the first N images")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    batch_options(evaluate)
    progress_options(evaluate)
    data_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    sweep = commands.add_parser("sweep", help="accuracy/FLOPs over a grid of tau and threshold")
    sweep.add_argument("--checkpoint", default=None)
    sweep.add_argument("--taus", type=float_list, default=list(SWEEP_TAUS))
    sweep.add_argument("--thresholds", type=float_list, default=list(SWEEP_THRESHOLDS))
    sweep.add_argument("--limit", type=positive_int, default=None)
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
    bench.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N test images")
    bench.add_argument("--warmup", type=positive_int, default=2, help="untimed calls before each timing")
    bench.add_argument("--repeats", type=positive_int, default=5, help="timed calls; the median is reported")
    bench.add_argument("--single-images", type=positive_int, default=100, help="images timed one at a time")
    bench.add_argument("--big-batch", type=positive_int, default=BATCH_SIZE,
                       help="the large batch size timed beside batch 1 (a GPU needs thousands to be busy)")
    bench.add_argument("--train-steps", type=positive_int, default=5, help="timed training steps")
    bench.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    bench.add_argument("--tau", type=tau_arg, default=None, help="routed setting's temperature (default: checkpoint's)")
    bench.add_argument("--threshold", type=threshold_arg, default=None,
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
    add_config_flags(baseline, TrainConfig, only=BASELINE_TRAIN_FLAGS)
    baseline.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
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
    trace.add_argument("--tau", type=tau_arg, default=None, help="Gumbel-Softmax temperature (default: checkpoint's)")
    trace.add_argument("--threshold", type=threshold_arg, default=None, help="selection threshold in [0, 1]")
    trace.add_argument("--noise-seed", type=int, default=None, help="turn Gumbel noise on with this seed")
    trace.add_argument("--split", choices=["test", "held-out"], default="test",
                       help="test split, or the training images the checkpoint's run held out")
    trace.add_argument("--limit", type=positive_int, default=None, help="only the first N images")
    trace.add_argument("--output", required=True, help="file to write: F.parquet or F.csv (metadata: F.parquet.json)")
    trace.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help="images per forward pass")
    progress_options(trace)
    data_options(trace)
    trace.set_defaults(func=cmd_trace)

    add_audit_parsers(commands, data_options)

    app = commands.add_parser("app", help="serve the Streamlit app (as `make run` does)")
    app.add_argument("--port", type=positive_int, default=8501, help="port (default: %(default)s)")
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
