"""What each command of `python -m drnet_core` does: one `cmd_*` function per command.

The parser that maps the command line onto them is `drnet_core.cli`; argument types and the flags
derived from the config dataclasses are in `drnet_core.training.options`.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from drnet_core.net.checkpoint import default_device, load_checkpoint
from drnet_core.training.config import TrainConfig, preset
from drnet_core.analysis.evaluate import default_setting
from drnet_core.training.options import config_overrides

log = logging.getLogger("drnet_core")


PROGRESS_SETTINGS = ("auto", "on", "off")
# The training settings `baseline` takes from the command line; the rest are the preset's, as for the DRNet.
BASELINE_TRAIN_FLAGS = ("epochs", "limit", "val_size")


def show_progress(args, *, auto: bool = True) -> bool:
    """Progress bars: --progress on or off; auto draws them only where a person watches, when stderr is a
    terminal and, under torchrun, in rank 0, so that logs under CI or torchrun stay one line per event.
    `auto=False`: a command whose output is for programs (--json) stays quiet unless asked."""
    setting = "off" if getattr(args, "no_progress", False) else getattr(args, "progress", "auto")
    if setting == "auto":
        return auto and sys.stderr.isatty() and int(os.environ.get("RANK", "0")) == 0
    return setting == "on"


def _eval_set(args, meta: dict):
    from drnet_core.data.datasets import dataset_of, load_evaluation_set, to_model_input

    dataset = dataset_of(meta)
    if getattr(args, "split", "test") == "held-out":
        from drnet_core.data.held_out import held_out_set

        test = held_out_set(meta, args.data_dir)
    else:
        test = load_evaluation_set(dataset, args.data_dir)
    test = test.subset(args.limit)
    return test, to_model_input(test.images, dataset)


def cmd_train(args) -> int:
    from drnet_core.training.train import train

    chosen = preset(args.preset)
    model_config = replace(chosen.model, branches=args.branches) if args.branches else chosen.model
    try:
        train_config = replace(chosen.train, **config_overrides(args, TrainConfig))
        meta = train(model_config, train_config, args.output, dataset=args.dataset, data_dir=args.data_dir,
                     progress=show_progress(args), evaluate_test=not args.skip_test, log_dir=args.log_dir,
                     log_every=args.log_every)
    except ValueError as error:  # an invalid setting, a resume file of another config, an --init-from of another architecture
        print(f"error: {error}", file=sys.stderr)
        return 2
    if meta:
        print(json.dumps({k: v for k, v in meta.items() if k not in ("history", "validation_sweep", "train_config", "branch_ms")},
                         indent=2))
    return 0


def cmd_select_default(args) -> int:
    from drnet_core.training.finalize import reselect_default

    meta = reselect_default(args.checkpoint, args.output or args.checkpoint, data_dir=args.data_dir,
                            progress=show_progress(args))
    print(json.dumps({"default_tau": meta["default_tau"], "default_threshold": meta["default_threshold"],
                      "default_selection": meta["default_selection"], "test_default": meta.get("test_default"),
                      "test_dense": meta.get("test_dense")}, indent=2))
    return 0


def _routed_run(args, *, progress: bool):
    """(context, model, meta, set, run): the checkpoint routed over the chosen set at the chosen setting
    (its default where none is given); under torchrun the set is sharded across the processes."""
    from drnet_core.analysis.distributed import DistributedContext, run_routed_sharded

    ctx = DistributedContext()
    ctx.quiet_other_ranks()
    model, meta = load_checkpoint(args.checkpoint, device=ctx.device if ctx.distributed else default_device(),
                                  fold_batch_norms=True)
    default_tau, default_threshold = default_setting(meta)
    tau = args.tau if args.tau is not None else default_tau
    threshold = args.threshold if args.threshold is not None else default_threshold
    test, inputs = _eval_set(args, meta)
    run = run_routed_sharded(model, inputs, test.labels, tau=tau, threshold=threshold, noise_seed=args.noise_seed,
                             batch_size=args.batch_size, progress=progress, ctx=ctx)
    ctx.close()
    return ctx, model, meta, test, run


def cmd_evaluate(args) -> int:
    from drnet_core.analysis.evaluate import summarize

    ctx, model, meta, test, run = _routed_run(args, progress=show_progress(args, auto=not args.json))
    if not ctx.is_main:
        return 0
    tau, threshold = run.tau, run.threshold
    summary = summarize(run, model, test.name, tuple(meta.get("class_names", [str(i) for i in range(10)])))
    summary["checkpoint"] = str(args.checkpoint or "shipped")
    # Which parts of the network this setting uses, and for how many of the images.
    summary["branch_usage"] = dict(zip(model.architecture().branch_labels(), run.path_masks.float().mean(dim=0).tolist()))
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
    from drnet_core.analysis.distributed import DistributedContext, sweep_sharded

    ctx = DistributedContext()  # under torchrun every setting's evaluation is sharded
    ctx.quiet_other_ranks()
    model, meta = load_checkpoint(args.checkpoint, device=ctx.device if ctx.distributed else default_device(),
                                  fold_batch_norms=True)
    test, inputs = _eval_set(args, meta)
    rows = sweep_sharded(model, inputs, test.labels, args.taus, args.thresholds, progress=show_progress(args),
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
    """Dense vs routed wall time, router overhead, evaluation and training throughput (drnet_core.cli.bench)."""
    from drnet_core.cli.bench import format_table, run_bench

    model, meta = load_checkpoint(args.checkpoint, device=default_device(), fold_batch_norms=True)
    result = run_bench(model, meta, data_dir=args.data_dir, eval_images=args.limit, warmup=args.warmup,
                       repeats=args.repeats, single_images=args.single_images, big_batch=args.big_batch,
                       train_steps=args.train_steps, tau=args.tau, threshold=args.threshold)
    result["settings"]["checkpoint"] = str(args.checkpoint or "shipped")
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


def cmd_baseline(args) -> int:
    """Train a static baseline the way the DRNet preset is trained (see drnet_core.net.baselines)."""
    from drnet_core.net.baselines import BaselineConfig, build_baseline, most_picked_branches, plain_cnn_widths
    from drnet_core.training.train import train

    chosen = preset(args.preset)
    train_config = replace(chosen.train, **config_overrides(args, TrainConfig, BASELINE_TRAIN_FLAGS))
    base = chosen.model.to_dict()
    if args.kind == "static-cells":
        if args.branches:
            branches = tuple(name.strip() for name in args.branches.split(",") if name.strip())
        else:
            from drnet_core.data.datasets import load_fashion_mnist, to_model_input
            from drnet_core.data.held_out import split_train_val

            drnet, meta = load_checkpoint(args.checkpoint)
            images = load_fashion_mnist("train", args.data_dir)
            _, val_idx = split_train_val(images, train_config.val_size, train_config.seed)
            tau, threshold = default_setting(meta)
            branches = most_picked_branches(drnet, to_model_input(images.images[val_idx]), tau=tau, threshold=threshold)
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
        meta = train(config, train_config, args.output, data_dir=args.data_dir, progress=show_progress(args),
                     select_defaults=False, model=model)
    except ValueError as error:  # e.g. a resume file left by a run with another config
        print(f"error: {error}", file=sys.stderr)
        return 2
    if meta:
        print(json.dumps({"kind": args.kind, "config": config.to_dict(), "epochs": meta["epochs"],
                          "test": meta.get("test_default")}, indent=2))
    return 0


def cmd_subset(args) -> int:
    from drnet_core.data.datasets import write_shipped_subset

    print(write_shipped_subset(args.data_dir))
    return 0


def cmd_trace(args) -> int:
    """One row per image of the evaluated set, with its routing, as Parquet or CSV (drnet_core.analysis.trace)."""
    from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, sha256_of
    from drnet_core.analysis.evaluate import summarize
    from drnet_core.analysis.trace import TraceOutputError, check_output, trace_metadata, trace_table, write_trace

    try:
        output = check_output(args.output)  # before any work: a wrong suffix is known at once
    except TraceOutputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ctx, model, meta, test, run = _routed_run(args, progress=show_progress(args))
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
          f"at tau={run.tau:g}, threshold={run.threshold:g}")
    return 0


def streamlit_command(port: int, address: str | None, extra: list[str]) -> list[str]:
    """`streamlit run` of the app with the project's Streamlit settings, from any working folder.

    Streamlit reads `.streamlit/config.toml` only from the working folder, so its settings are passed
    as options: the upload limit there is the one `drnet_core.data.images` enforces.
    """
    import tomllib

    from drnet_core.resources import STREAMLIT_CONFIG, app_folder

    def option(value) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    settings = tomllib.loads(STREAMLIT_CONFIG.read_text())
    command = [sys.executable, "-m", "streamlit", "run", str(app_folder() / "streamlit_app.py")]
    command += [f"--{section}.{key}={option(value)}" for section, values in settings.items()
                for key, value in values.items()]
    command += [f"--server.port={port}"] + ([f"--server.address={address}"] if address else [])
    return command + [part for part in extra if part != "--"]


def cmd_app(args) -> int:
    command = streamlit_command(args.port, args.address, args.streamlit_options)
    sys.stdout.flush()
    os.execv(command[0], command)  # streamlit takes over this process, and with it Ctrl-C and signals
