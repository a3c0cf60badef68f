"""The inference A/B experiments behind docs/PERFORMANCE.md, one command each.

    python scripts/inference_experiments.py eval-batch   # 10k routed evaluation at several batch sizes
    python scripts/inference_experiments.py modules      # per-module wall time of routed and dense batches
    python scripts/inference_experiments.py allocator    # `modules` with and without keep_freed_memory
    python scripts/inference_experiments.py fold-bn      # conv + batch-norm folding: same outputs? faster?
    python scripts/inference_experiments.py gather-scatter  # sub-batch gather/scatter: NCHW vs NHWC view
    python scripts/inference_experiments.py pooling      # stride-1 3x3 pooling: torch kernels vs exact rewrites
    python scripts/inference_experiments.py eval-workers # 10k routed evaluation: one batch at a time vs two
    python scripts/inference_experiments.py without-pooling  # the default with cells 0-1's pooling forced off
    python scripts/inference_experiments.py compile      # torch.compile of every module the executor calls
    python scripts/inference_experiments.py audit-time   # the audit's per-image time estimate against MFLOPs
    python scripts/inference_experiments.py batch1-ops   # one image: what each operator of a branch costs
    python scripts/inference_experiments.py batch1-always-on  # one image: what a forward that executes nothing costs
    python scripts/inference_experiments.py batch1-op-count --rev REV  # one image: operators per forward, here and at REV
    python scripts/inference_experiments.py merged-reductions  # one image: reductions as one full convolution each
    python scripts/inference_experiments.py against-commit --rev REV  # this tree's routed speed against REV's
    python scripts/inference_experiments.py cuda-shapes  # CUDA: first evaluations at new settings, padded or not
    python scripts/inference_experiments.py cell-overhead [--profile-cell N]  # per cell: routed time against its router and branches
    python scripts/inference_experiments.py split-batch  # one batch of 256: one call on two threads vs two halves on one each
    python scripts/inference_experiments.py stem         # the stem's one-channel convolution computed other ways
    python scripts/inference_experiments.py forward-profile [--rev REV]  # a routed batch's operators by input shape
    python scripts/inference_experiments.py latency-processes  # bench's latency rows, one fresh process each, three memory layouts
    python scripts/inference_experiments.py latency-processes --layouts huge --rev REV  # the same, here against REV
    python scripts/inference_experiments.py modules-over-time --seconds 300  # `modules`, dense and routed, again and again

All run on the shipped checkpoint (or `--checkpoint`) at its default setting on the test split. This
machine's speed drifts, so each experiment alternates its variants and prints every run.
"""
from __future__ import annotations

import argparse
import atexit
import collections
import copy
import importlib
import importlib.util
import inspect
import io
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drnet_core.bench import inputs_seen, latency, routed_with_cell_inputs  # noqa: E402
from drnet_core.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint  # noqa: E402
from drnet_core.cost import measure_branch_ms, module_macs  # noqa: E402
from drnet_core.data import FASHION_CLASSES, load_test_set, to_model_input  # noqa: E402
from drnet_core.evaluate import run_routed  # noqa: E402
from drnet_core.folding import fold_batch_norms  # noqa: E402
from drnet_core.runtime import HUGE_PAGES_VARIABLE, configure_cpu_memory, keep_freed_memory, use_huge_pages  # noqa: E402


def setup(checkpoint: str | None, *, fold_batch_norms: bool = True, rev: str | None = None):
    """The model as the CLI and the app load it (batch norms folded, unless told otherwise) and the test split.

    rev: load the model with drnet_core as it was at that git revision instead (`model_at`)."""
    if rev:
        model, meta, _ = model_at(rev, checkpoint)
    else:
        model, meta = load_checkpoint(checkpoint, fold_batch_norms=fold_batch_norms)
    test = load_test_set()
    return model, meta, to_model_input(test.images), test.labels


def eval_batch(args) -> None:
    use_huge_pages()
    if args.keep_freed_memory != "off":
        keep_freed_memory()
    model, meta, inputs, labels = setup(args.checkpoint)
    tau, threshold = meta["default_tau"], meta["default_threshold"]
    for _ in range(args.rounds):
        row = {}
        for batch_size in (128, 256, 512, 1000):
            start = time.perf_counter()
            run_routed(model, inputs, labels, tau=tau, threshold=threshold, batch_size=batch_size)
            row[batch_size] = round(time.perf_counter() - start, 3)
        print("seconds for the test split by batch size:", row)


@torch.inference_mode()
def module_times(model, inputs: torch.Tensor, *, tau: float, threshold: float, batches: int = 10,
                 passes: int = 3) -> dict:
    """Wall ms per 256-image batch of the whole forward and of each top-level part (hooks)."""
    totals, starts = collections.defaultdict(float), {}
    parts = [("stem", model.stem)] + [(f"reduction{i}", r) for i, r in enumerate(model.reductions)]
    parts += [(f"cell{i}", c) for i, c in enumerate(model.cells)] + [("head", model.head)]
    hooks = []
    for name, module in parts:
        hooks.append(module.register_forward_pre_hook(lambda _m, _a, name=name: starts.__setitem__(name, time.perf_counter())))
        hooks.append(module.register_forward_hook(
            lambda _m, _a, _o, name=name: totals.__setitem__(name, totals[name] + time.perf_counter() - starts[name])))
    chunks = [inputs[i:i + 256] for i in range(0, 256 * batches, 256)]
    for chunk in chunks:
        model(chunk, tau=tau, threshold=threshold)
    totals.clear()
    start = time.perf_counter()
    for _ in range(passes):
        for chunk in chunks:
            model(chunk, tau=tau, threshold=threshold)
    count = passes * len(chunks)
    for hook in hooks:
        hook.remove()
    return {"total": round(1e3 * (time.perf_counter() - start) / count, 2),
            **{name: round(1e3 * seconds / count, 2) for name, seconds in totals.items()}}


def modules(args) -> None:
    use_huge_pages()
    if args.keep_freed_memory != "off":
        keep_freed_memory()
    model, meta, inputs, _ = setup(args.checkpoint)
    tau = meta["default_tau"]
    result = {"keep_freed_memory": args.keep_freed_memory != "off",
              "routed": module_times(model, inputs, tau=tau, threshold=meta["default_threshold"]),
              "dense": module_times(model, inputs, tau=tau, threshold=0.0)}
    print(json.dumps(result))


def modules_over_time(args) -> None:
    """Per-module dense and routed times of batches of 256, back to back for `--seconds`, one line each.

    The machine's efficiency changes with its spells; this shows which parts of the forward move.
    """
    configure_cpu_memory()
    model, meta, inputs, _ = setup(args.checkpoint)
    tau, threshold = meta["default_tau"], meta["default_threshold"]
    flops_ratio = latency(model, inputs[:1024], tau=tau, threshold=threshold, batch=256, warmup=1, repeats=1)["flops_ratio"]
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        routed = module_times(model, inputs, tau=tau, threshold=threshold, batches=4, passes=2)
        dense = module_times(model, inputs, tau=tau, threshold=0.0, batches=4, passes=1)
        print(json.dumps({"time": time.strftime("%H:%M:%S"), "efficiency": round(dense["total"] / routed["total"] / flops_ratio, 3),
                          "page_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before,
                          "dense": dense, "routed": routed}), flush=True)


def in_fresh_process(args, *experiment: str, prefix: list[str] | None = None, env: dict[str, str] | None = None) -> str:
    """This script's stdout for `experiment` run in a new Python process, on the same checkpoint.

    prefix: a command the process runs under (e.g. `setarch`); env: variables added to this environment.
    """
    command = [*(prefix or []), sys.executable, __file__, *experiment]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    return subprocess.run(command, check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}).stdout


def allocator(args) -> None:
    """mallopt cannot be undone inside a process, so each variant runs in a fresh one, alternating."""
    for _ in range(args.rounds):
        for setting in ("on", "off"):
            result = json.loads(in_fresh_process(args, "modules", "--keep-freed-memory", setting))
            print(f"keep_freed_memory {setting:3s}: routed {result['routed']['total']} ms, "
                  f"dense {result['dense']['total']} ms per batch of 256")


def eval_workers(args) -> None:
    """Cold and warm 10k evaluation, each variant in a fresh process (as the app's first slider move)."""
    for _ in range(args.rounds):
        for workers in ("1", "2"):
            print(in_fresh_process(args, "eval-workers-once", "--workers", workers).strip())


def eval_workers_once(args) -> None:
    import drnet_core.evaluate as evaluate

    configure_cpu_memory()
    allowed = int(args.workers)
    real = evaluate.batch_workers
    evaluate.batch_workers = lambda device, batches: min(allowed, real(device, batches))
    model, meta, inputs, labels = setup(args.checkpoint)
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        evaluate.run_routed(model, inputs, labels, tau=meta["default_tau"], threshold=meta["default_threshold"])
        seconds.append(round(time.perf_counter() - start, 3))
    print(f"batches at a time {allowed}: cold {seconds[0]} s, warm {seconds[1]} s")


# Memory layouts: 4 KB pages, as before huge pages were the default; the same with the same addresses in
# every run (Linux `setarch -R` turns off address randomisation); and torch's CPU allocator backing
# large tensors with transparent huge pages (drnet_core.runtime; read at the process's first tensor,
# so set from outside the process here).
# --layouts name: (what the output calls it, command prefix, environment)
LAYOUT_VARIANTS = {
    "4kb": ("4 KB pages", [], {HUGE_PAGES_VARIABLE: "0"}),
    "4kb-no-randomisation": ("4 KB pages, randomisation off", ["setarch", platform.machine(), "-R"],
                             {HUGE_PAGES_VARIABLE: "0"}),
    "huge": ("huge pages", [], {HUGE_PAGES_VARIABLE: "1"}),
}


def latency_processes(args) -> None:
    """`bench`'s two latency rows in a fresh process per run, alternating memory layouts and, with
    `--rev`, this tree's drnet_core with that revision's (timed by this tree's `bench.latency`).

    One `bench` run is one process at one moment of the machine: this shows how far the efficiency
    of single runs spreads, and its median over several processes.
    """
    trees = [(f", at {args.rev}", ["--rev", args.rev]), (", this tree", [])] if args.rev else [("", [])]
    variants = [(name + tree, prefix, env, rev) for name, prefix, env in (LAYOUT_VARIANTS[key] for key in args.layouts)
                for tree, rev in trees]
    results: dict[str, list[dict]] = {name: [] for name, *_ in variants}
    for round_index in range(args.rounds):
        for name, prefix, env, rev in variants:
            if prefix and shutil.which(prefix[0]) is None:
                continue
            single, big = json.loads(in_fresh_process(args, "latency-once", *rev, prefix=prefix, env=env))
            results[name].append({"batch_1": single, "batch_256": big})
            print(f"round {round_index + 1}, {name}: {latency_text(single, big)}", flush=True)
    for name, runs in results.items():
        if runs:
            spread = {row: [run[row]["efficiency"] for run in runs] for row in ("batch_1", "batch_256")}
            print(f"{name}, {len(runs)} processes: efficiency at batch 1 median {statistics.median(spread['batch_1']):.3f}, "
                  f"range {min(spread['batch_1']):.3f}-{max(spread['batch_1']):.3f}; at batch 256 median "
                  f"{statistics.median(spread['batch_256']):.3f}, range {min(spread['batch_256']):.3f}-"
                  f"{max(spread['batch_256']):.3f}")


def latency_once(args) -> None:
    configure_cpu_memory()  # as the CLI and the app do
    # With --rev, the same timing code on the model as that revision's drnet_core runs it.
    model, meta, inputs, _ = setup(args.checkpoint, rev=args.rev)
    print(json.dumps(batch_latencies(model, inputs, tau=meta["default_tau"], threshold=meta["default_threshold"],
                                     warmup=2, repeats=9)))


def same_results(reference, other) -> str:
    """Whether two routed runs of the same images agree: predictions, paths, largest probability gap."""
    return (f"same predictions: {bool((reference.predictions == other.predictions).all())}, same paths: "
            f"{bool((reference.path_masks == other.path_masks).all())}, largest probability difference: "
            f"{float((reference.probabilities - other.probabilities).abs().max()):.2g}")


def batch_latencies(model, inputs: torch.Tensor, **timing) -> tuple[dict, dict]:
    """`bench`'s two latency rows: 100 single images, and four distinct batches of 256."""
    return latency(model, inputs[:100], batch=1, **timing), latency(model, inputs[:1024], batch=256, **timing)


def latency_text(single: dict, big: dict) -> str:
    return (f"batch 1 dense {single['dense_ms']:.2f} ms, routed {single['routed_ms']:.2f} ms, efficiency "
            f"{single['efficiency']:.3f}; batch 256 dense {big['dense_ms']:.1f} ms, routed {big['routed_ms']:.1f} ms, "
            f"efficiency {big['efficiency']:.3f}")


def folded(model, *, always_on_only: bool = False):
    """A folded copy (`drnet_core.folding`); with `always_on_only`, only the stem and the reductions,
    which dense and routed forwards both run."""
    model = copy.deepcopy(model)
    for part in [model.stem, model.reductions] if always_on_only else [model]:
        fold_batch_norms(part)
    return model


def fold_bn(args) -> None:
    configure_cpu_memory()
    model, meta, inputs, labels = setup(args.checkpoint, fold_batch_norms=False)
    tau, threshold = meta["default_tau"], meta["default_threshold"]
    variants = {"plain": model, "always-on folded": folded(model, always_on_only=True), "all folded": folded(model)}
    plain_run = run_routed(model, inputs[:2000], labels[:2000], tau=tau, threshold=threshold)
    for name in ("always-on folded", "all folded"):
        fused_run = run_routed(variants[name], inputs[:2000], labels[:2000], tau=tau, threshold=threshold)
        print(f"{name}: {same_results(plain_run, fused_run)}")
    for _ in range(args.rounds):
        for name, variant in variants.items():
            times = []
            for _ in range(3):
                start = time.perf_counter()
                run_routed(variant, inputs, labels, tau=tau, threshold=threshold)
                times.append(time.perf_counter() - start)
            single, big = batch_latencies(variant, inputs, tau=tau, threshold=threshold, warmup=2, repeats=7)
            print(f"{name:16s}: routed 10k evaluation {statistics.median(times):.2f} s; {latency_text(single, big)}",
                  flush=True)


def mean_ms(step, repeats: int) -> float:
    """Mean wall ms of `step` over `repeats` calls after three untimed ones (micro-benchmarks on the CPU)."""
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats * 1000


def gather_scatter(args) -> None:
    """The executor's per-branch gather and scatter at each cell's shape, on the NCHW and the NHWC view."""
    from drnet_core.cell import gather_rows, nhwc

    model, _, _, _ = setup(args.checkpoint)
    generator = torch.Generator().manual_seed(0)

    with torch.inference_mode():
        for cell in model.cells:
            x = torch.randn(256, cell.channels, cell.height, cell.width, generator=generator)
            x = x.contiguous(memory_format=torch.channels_last)
            rows = torch.randperm(256, generator=generator)[:140].sort().values  # a typical sub-batch
            out_rows, node = gather_rows(x, rows), torch.zeros_like(x)
            gather_nchw = lambda: x.index_select(0, rows).contiguous(memory_format=torch.channels_last)  # noqa: E731
            scatter_nchw = lambda: node.index_add_(0, rows, out_rows)  # noqa: E731
            same = torch.equal(gather_nchw(), gather_rows(x, rows))
            for _ in range(args.rounds):
                print(f"{cell.channels}x{cell.height}x{cell.width}, 140 of 256 rows (same values: {same}): "
                      f"gather {mean_ms(gather_nchw, 50):.3f} -> {mean_ms(lambda: gather_rows(x, rows), 50):.3f} ms, "
                      f"scatter {mean_ms(scatter_nchw, 50):.3f} -> "
                      f"{mean_ms(lambda: nhwc(node).index_add_(0, rows, nhwc(out_rows)), 50):.3f} ms")


def pooling(args) -> None:
    """Stride-1 3x3 pooling at each cell's shape: the torch kernels against exact rewrites without index tensors.

    On a CPU, `F.max_pool2d` always computes the argmax indices too (int64, twice the output's bytes).
    Every rewrite here skips them: two separable passes of `torch.maximum`; two dilated `max_pool1d`
    passes over the NHWC memory (the channels_last tensor read as rows, padded with -inf by hand since
    `max_pool1d` pads at most half its kernel); `max_pool3d` over the (N, 1, H, W, C) view. For average
    pooling: a depthwise convolution of ones times each position's reciprocal window size.
    """
    import torch.nn.functional as F

    configure_cpu_memory()
    model, _, _, _ = setup(args.checkpoint)

    def separable_max(x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
        rows = torch.maximum(torch.maximum(padded[:, :, :-2], padded[:, :, 1:-1]), padded[:, :, 2:])
        return torch.maximum(torch.maximum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])

    def max_by_1d_passes(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1), value=float("-inf"))  # NHWC, W padded
        rows = F.max_pool1d(padded.reshape(n * h, 1, (w + 2) * c), 3, stride=1, dilation=c).view(n, h, w, c)
        padded = F.pad(rows, (0, 0, 0, 0, 1, 1), value=float("-inf"))  # H padded
        return F.max_pool1d(padded.reshape(n, 1, (h + 2) * w * c), 3, stride=1,
                            dilation=w * c).view(n, h, w, c).permute(0, 3, 1, 2)

    def max_as_3d(x: torch.Tensor) -> torch.Tensor:
        view = x.permute(0, 2, 3, 1).unsqueeze(1)  # (N, 1, H, W, C), contiguous
        return F.max_pool3d(view, (3, 3, 1), stride=1, padding=(1, 1, 0)).squeeze(1).permute(0, 3, 1, 2)

    with torch.inference_mode():
        for cell in model.cells:
            x = torch.randn(256, cell.channels, cell.height, cell.width).contiguous(memory_format=torch.channels_last)
            ones = torch.ones(cell.channels, 1, 3, 3).contiguous(memory_format=torch.channels_last)
            window = F.conv2d(torch.ones(1, 1, cell.height, cell.width), torch.ones(1, 1, 3, 3), padding=1)
            reciprocal = (1 / window).contiguous(memory_format=torch.channels_last)
            avg_by_conv = lambda: F.conv2d(x, ones, padding=1, groups=cell.channels).mul_(reciprocal)  # noqa: E731
            max_ref = F.max_pool2d(x, 3, 1, 1)
            avg_error = float((avg_by_conv() - F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).abs().max())
            same = all(torch.equal(max_ref, rewrite(x)) for rewrite in (separable_max, max_by_1d_passes, max_as_3d))
            for _ in range(args.rounds):
                print(f"{cell.channels}x{cell.height}x{cell.width}, batch 256 (max rewrites exact: {same}; "
                      f"avg by conv within {avg_error:.1e}): max_pool2d {mean_ms(lambda: F.max_pool2d(x, 3, 1, 1), 30):.2f} ms, "
                      f"separable {mean_ms(lambda: separable_max(x), 30):.2f}, 1d passes "
                      f"{mean_ms(lambda: max_by_1d_passes(x), 30):.2f}, 3-D view {mean_ms(lambda: max_as_3d(x), 10):.2f}; "
                      f"avg_pool2d {mean_ms(lambda: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), 30):.2f} ms, "
                      f"depthwise ones {mean_ms(avg_by_conv, 30):.2f}")


def without_pooling(args) -> None:
    """The default setting with the pooling branches of the first two cells forced off, against as trained.

    No retraining: the accuracy says what dropping them costs this model as trained, the timings what a
    model trained without them could gain. Dense always runs every branch.
    """
    from drnet_core.bench import time_model

    configure_cpu_memory()
    model, meta, inputs, labels = setup(args.checkpoint)
    if not {"avg_pool_3x3", "max_pool_3x3"} <= set(model.config.branches):
        sys.exit(f"{args.checkpoint or 'the shipped checkpoint'} has no pooling branches to force off; "
                 "its parent has: --checkpoint assets/drnet_fashion_pooling.pt")
    tau, threshold = meta["default_tau"], meta["default_threshold"]
    pooling_off = []
    for index, cell in enumerate(model.cells):
        forced = torch.zeros(cell.branch_macs.shape, dtype=torch.long)
        if index < 2:
            for name in ("avg_pool_3x3", "max_pool_3x3"):
                forced[:, cell.branch_names.index(name)] = -1
        pooling_off.append(forced)
    for _ in range(args.rounds):
        for name, overrides in (("as trained", None), ("no pooling in cells 0-1", pooling_off)):
            run = run_routed(model, inputs, labels, tau=tau, threshold=threshold, branch_overrides=overrides)
            timing = dict(tau=tau, threshold=threshold, warmup=2, repeats=5, routed_overrides=overrides)
            single, big = batch_latencies(model, inputs, **timing)
            timed = time_model(model, inputs[:1024], batch=256, **timing)
            print(f"{name:24s}: test accuracy {float(run.correct.float().mean()):.4f}, {float(run.mflops.mean()):.2f} MFLOPs; "
                  f"efficiency batch 1 {single['efficiency']:.2f}, batch 256 {big['efficiency']:.2f} "
                  f"(routed {big['routed_ms']:.1f} ms, dense {big['dense_ms']:.1f} ms); time model: allowed share "
                  f"{timed['time_ratio'] / big['flops_ratio']:.2f}, executor efficiency {timed['executor_efficiency']:.2f}",
                  flush=True)


def compiled(model):
    """A copy whose stem, reductions, routers, branches and head are each `torch.compile`d.

    The executor stays eager: it reads counts to the host and runs each branch on a sub-batch whose
    size changes every batch, so each module is compiled with a dynamic batch dimension instead.
    """
    model = copy.deepcopy(model)
    # Modules of one class share their forward's code object, and dynamo counts recompilations per code
    # object: the three cells' channel counts, batch 1 and the grad modes already exceed the default
    # limit of 8, after which the remaining shapes would run eager. `run_routed`'s worker threads
    # (one intra-op thread each) also recompile: the thread count is part of dynamo's guards.
    torch._dynamo.config.recompile_limit = 64

    def compile_module(module):
        return torch.compile(module, dynamic=True)

    model.stem = compile_module(model.stem)
    model.head = compile_module(model.head)
    for index, reduction in enumerate(model.reductions):
        model.reductions[index] = compile_module(reduction)
    for cell in model.cells:
        cell.router = compile_module(cell.router)
        for edge in cell.edges:
            for index, branch in enumerate(edge):
                # Identity computes nothing, and the executor relies on it returning its input.
                if not isinstance(branch, nn.Identity):
                    edge[index] = compile_module(branch)
    return model


def compile_experiment(args) -> None:
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    configure_cpu_memory()
    model, meta, inputs, labels = setup(args.checkpoint)
    tau, threshold = meta["default_tau"], meta["default_threshold"]
    fast = compiled(model)
    start = time.perf_counter()
    # Compilation happens on first use: one dense and one routed pass over batches of both sizes.
    for batch in (inputs[:256], inputs[:1]):
        fast(batch, tau=tau, threshold=0.0)
        fast(batch, tau=tau, threshold=threshold)
    run_routed(fast, inputs[:2000], labels[:2000], tau=tau, threshold=threshold)
    print(f"compilation (first calls; {cache_dir()} caches it for the next process): "
          f"{time.perf_counter() - start:.1f} s")
    eager_run = run_routed(model, inputs[:2000], labels[:2000], tau=tau, threshold=threshold)
    compiled_run = run_routed(fast, inputs[:2000], labels[:2000], tau=tau, threshold=threshold)
    print(same_results(eager_run, compiled_run))
    for _ in range(args.rounds):
        for name, variant in (("eager", model), ("compiled", fast)):
            start = time.perf_counter()
            run_routed(variant, inputs, labels, tau=tau, threshold=threshold)
            evaluation = time.perf_counter() - start
            single, big = batch_latencies(variant, inputs, tau=tau, threshold=threshold, warmup=2, repeats=5)
            print(f"{name:8s}: routed 10k evaluation {evaluation:.2f} s; {latency_text(single, big)}", flush=True)


def audit_time(args) -> None:
    """How the cost audit's estimated ms per image (app, "Cost audit") ranks inputs against MFLOPs."""
    from drnet_core import audit
    from drnet_core.cost import measure_time_table

    configure_cpu_memory()
    model, meta, inputs, labels = setup(args.checkpoint)
    tau, threshold = meta["default_tau"], meta["default_threshold"]
    run = run_routed(model, inputs, labels, tau=tau, threshold=threshold)
    # Ties in MFLOPs make "the costliest 100 by MFLOPs" partly an arbitrary pick: say how large they are.
    hundredth = run.mflops.sort(descending=True).values[99]
    print(f"{len(torch.unique(run.mflops))} distinct MFLOPs values; the 100th costliest, {float(hundredth):.2f} MFLOPs, "
          f"is shared by {int((run.mflops == hundredth).sum())} images", flush=True)
    for _ in range(args.rounds):
        times = measure_time_table(model, inputs[:256], tau=tau)
        table = audit.instance_table(run, meta.get("class_names", FASHION_CLASSES), time_table=times)
        by_flops = set(audit.costliest(table, 100, by="mflops").index)
        by_time = set(audit.costliest(table, 100, by=audit.TIME_COLUMN).index)
        ratio = audit.ms_per_mflop(table)
        cheapest = table.nsmallest(1000, "mflops").index
        measured = latency(model, inputs[:1024], tau=tau, threshold=threshold, batch=256, warmup=2, repeats=5)
        print(f"always-on {times.always_on_ms * 256:.1f} ms per batch of 256; estimated routed batch "
              f"{table[audit.TIME_COLUMN].mean() * 256:.1f} ms, measured {measured['routed_ms']:.1f} ms; "
              f"Spearman(MFLOPs, est. ms) {table['mflops'].corr(table[audit.TIME_COLUMN], method='spearman'):.3f}; "
              f"top 100 shared {len(by_flops & by_time)}; ms per MFLOP {ratio.min():.4f}-{ratio.max():.4f}, "
              f"median {ratio.median():.4f}, 1,000 cheapest by MFLOPs {ratio[cheapest].median():.4f}", flush=True)


@torch.inference_mode()
def stem_variants(args) -> None:
    """The stem's convolution (one input channel to many, 3x3) and ReLU on batches of 256, computed other ways.

    The same outputs each way (checked); medians over four batches, alternating, per round.
    """
    import torch.nn.functional as F

    configure_cpu_memory()
    model, _, inputs, _ = setup(args.checkpoint)
    conv = model.stem[0]
    weight, bias = conv.weight, conv.bias
    channels, size = weight.shape[0], inputs.shape[-1]
    batches = [inputs[start:start + 256].contiguous(memory_format=torch.channels_last) for start in range(0, 1024, 256)]

    def nchw_input(x):
        return F.conv2d(x.contiguous(), weight.contiguous(), bias, padding=1).clamp_min_(0)

    def depthwise_over_copies(x):  # one input channel to C outputs = a depthwise conv over C copies
        copies = x.expand(-1, channels, -1, -1).contiguous(memory_format=torch.channels_last)
        return F.conv2d(copies, weight, bias, padding=1, groups=channels).clamp_min_(0)

    def batch_as_groups(x):  # (1, B, H, W) with B groups of C outputs each
        grouped = x.reshape(1, len(x), size, size).contiguous(memory_format=torch.channels_last)
        out = F.conv2d(grouped, weight.repeat(len(x), 1, 1, 1), bias.repeat(len(x)), padding=1, groups=len(x))
        return out.clamp_min_(0).permute(0, 2, 3, 1).reshape(size, size, len(x), channels).permute(2, 3, 0, 1)

    def patches_matmul(x):
        padded = F.pad(x.reshape(len(x), size, size), (1, 1, 1, 1))
        patches = padded.unfold(1, 3, 1).unfold(2, 3, 1).reshape(-1, 9)
        out = torch.addmm(bias, patches, weight.reshape(channels, 9).t()).clamp_min_(0)
        return out.view(len(x), size, size, channels).permute(0, 3, 1, 2)

    variants = {"as shipped": model.stem, "NCHW input": nchw_input, "depthwise over copies": depthwise_over_copies,
                "batch as groups": batch_as_groups, "patches and one matrix product": patches_matmul}
    for name, variant in variants.items():
        gap = max(float((variant(x) - model.stem(x)).abs().max()) for x in batches)
        print(f"{name}: largest difference from the shipped stem {gap:.2g}")
    for round_index in range(args.rounds):
        times = {name: statistics.median(mean_ms(lambda: variant(x), 5) for x in batches)
                 for name, variant in variants.items()}
        print(f"round {round_index + 1}, ms per batch of 256: "
              + ", ".join(f"{name} {ms:.2f}" for name, ms in times.items()), flush=True)


def split_batch(args) -> None:
    """A batch of 256 as one call on two threads, against its two halves at once on one thread each.

    `run_routed` already evaluates two batches at a time this way; this asks whether one batch gains
    from it too, i.e. whether the routed forward is held back by its small operators scaling badly over
    two threads. Dense and routed, alternating, medians of 3 passes over four batches, ms per batch.
    """
    from concurrent.futures import ThreadPoolExecutor

    configure_cpu_memory()
    model, meta, inputs, _ = setup(args.checkpoint)
    tau, threshold = meta["default_tau"], meta["default_threshold"]
    batches = [inputs[start:start + 256] for start in range(0, 1024, 256)]
    pool = ThreadPoolExecutor(2)
    atexit.register(pool.shutdown)

    def whole(batch: torch.Tensor, setting: float) -> torch.Tensor:
        with torch.inference_mode():  # per thread, so set in the pool's threads too
            return model(batch, tau=tau, threshold=setting)[0]

    def half(batch: torch.Tensor, setting: float) -> torch.Tensor:
        torch.set_num_threads(1)  # per thread, as in run_routed's workers
        return whole(batch, setting)

    def halves(batch: torch.Tensor, setting: float) -> torch.Tensor:
        middle = len(batch) // 2
        return torch.cat(list(pool.map(half, (batch[:middle], batch[middle:]), (setting, setting))))

    gap = max(float((whole(batch, threshold) - halves(batch, threshold)).abs().max()) for batch in batches)
    print(f"largest logit difference between the two ways: {gap:.2g}")
    with torch.inference_mode():
        flops_ratio = model.dense_mflops() / float(torch.cat(
            [model.mflops_per_instance(model(batch, tau=tau, threshold=threshold)[1]) for batch in batches]).mean())
    for round_index in range(args.rounds):
        times = {}
        for name, forward in (("one call", whole), ("two halves", halves)):
            for kind, setting in (("dense", 0.0), ("routed", threshold)):
                for batch in batches:  # warm-up
                    forward(batch, setting)
                passes = []
                for _ in range(3):
                    for batch in batches:
                        start = time.perf_counter()
                        forward(batch, setting)
                        passes.append(1e3 * (time.perf_counter() - start))
                times[name, kind] = statistics.median(passes)
        print(f"round {round_index + 1}: " + "; ".join(
            f"{name}: dense {times[name, 'dense']:.1f} ms, routed {times[name, 'routed']:.1f} ms, efficiency "
            f"{times[name, 'dense'] / times[name, 'routed'] / flops_ratio:.3f}" for name in ("one call", "two halves")),
            flush=True)


def branch_calls(cell, cell_inputs: list[torch.Tensor], tau: float, threshold: float) -> list[tuple[nn.Module, torch.Tensor]]:
    """Every branch call the routed cell makes on `cell_inputs`, with a copy of the sub-batch it ran on
    (the executor sums into node buffers in place after their branches have read them)."""
    branches = [branch for edge in cell.edges for branch in edge]
    return inputs_seen(branches, lambda: [cell(x, tau, threshold) for x in cell_inputs], copy=True)[1]


@torch.inference_mode()
def cell_overhead(args) -> None:
    """Per cell, a routed batch of 256 against its router and its executed branches timed alone.

    The branches are timed twice: each alone at batch 256 on one input, again and again, weighted by
    the share of images that ran them; and replayed in order on the very sub-batches the cell ran them
    on. The difference is what smaller batches and a colder cache (each call reads another tensor)
    cost; what is left after the replay is the executor's other work in that cell: gathers, scatters,
    node sums, bookkeeping and the Python between them.
    """
    from drnet_core.cost import measure_branch_ms, median_seconds
    from drnet_core.router import recalibrate

    configure_cpu_memory()
    model, meta, inputs, _ = setup(args.checkpoint)
    if args.profile_cell is not None and not 0 <= args.profile_cell < len(model.cells):
        sys.exit(f"--profile-cell must name a cell from 0 to {len(model.cells) - 1}")
    tau, threshold = meta["default_tau"], meta["default_threshold"]
    batches = [inputs[start:start + 256] for start in range(0, 1024, 256)]
    traces, inputs_by_batch = zip(*(routed_with_cell_inputs(model, batch, tau=tau, threshold=threshold)
                                    for batch in batches))
    cell_inputs = list(zip(*inputs_by_batch))  # per cell, its input in each batch
    # Per cell, per batch: the branch calls the cell made, with their sub-batches.
    calls_by_cell = [[branch_calls(cell, [x], tau, threshold) for x in cell_inputs[index]]
                     for index, cell in enumerate(model.cells)]
    for _ in range(args.rounds):
        for index, cell in enumerate(model.cells):
            shares = torch.stack([trace.executed[index].double().mean(dim=0) for trace in traces]).mean(dim=0)
            branches_ms = float((shares * measure_branch_ms(cell, batch_size=256, repeats=9)).sum())
            router_ms = 1e3 * median_seconds(lambda: [recalibrate(cell.router(x), tau, training=False) >= threshold
                                                      for x in cell_inputs[index]],
                                             warmup=2, repeats=9, device=model.device) / len(batches)
            cell_ms = 1e3 * median_seconds(lambda: [cell(x, tau, threshold) for x in cell_inputs[index]],
                                           warmup=2, repeats=9, device=model.device) / len(batches)
            calls = [call for batch_calls in calls_by_cell[index] for call in batch_calls]
            replay_ms = 1e3 * median_seconds(lambda: [branch(x) for branch, x in calls],
                                             warmup=2, repeats=9, device=model.device) / len(batches)
            print(f"cell {index}: routed {cell_ms:.2f} ms per batch of 256 = router {router_ms:.2f} + executed "
                  f"branches alone {branches_ms:.2f} + executor's own work {cell_ms - router_ms - branches_ms:.2f}; "
                  f"the branches replayed on their sub-batches {replay_ms:.2f} ({len(calls) / len(batches):.1f} calls "
                  f"per batch), so sub-batches {replay_ms - branches_ms:.2f} + other work "
                  f"{cell_ms - router_ms - replay_ms:.2f}", flush=True)
    print("each branch call of the first batch, timed alone again and again (warm), against its share of the "
          "same branch on all 256 images:")
    for index, cell in enumerate(model.cells):
        whole_batch = cell_inputs[index][0]
        for branch, sub_batch in calls_by_cell[index][0]:
            alone = 1e3 * median_seconds(lambda: branch(sub_batch), warmup=3, repeats=30, device=model.device)
            share = 1e3 * median_seconds(lambda: branch(whole_batch), warmup=3, repeats=30,
                                         device=model.device) * len(sub_batch) / len(whole_batch)
            print(f"  cell {index}, {type(branch).__name__} on {len(sub_batch)} images: {alone:.3f} ms, share "
                  f"{share:.3f} ms, {alone / share:.2f}x", flush=True)
    if args.profile_cell is not None:
        from torch.profiler import ProfilerActivity, profile

        cell = model.cells[args.profile_cell]
        with profile(activities=[ProfilerActivity.CPU]) as profiled:
            for _ in range(5):
                for x in cell_inputs[args.profile_cell]:
                    cell(x, tau, threshold)
        print(f"cell {args.profile_cell}, 5 passes over {len(batches)} batches of 256:")
        print(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def forward_profile(args) -> None:
    """The operators of a routed forward of four batches of 256, by operator and input shape (torch.profiler).

    With `--rev`, the model as that revision's drnet_core runs it. Each line: self CPU time per batch and
    calls per batch. The profiler adds its own cost to every operator, so compare lines, not totals,
    with unprofiled timings.
    """
    from torch.profiler import ProfilerActivity, profile

    configure_cpu_memory()
    model, meta, inputs, _ = setup(args.checkpoint, rev=args.rev)
    tau, threshold = meta["default_tau"], meta["default_threshold"]
    batches = [inputs[i:i + 256] for i in range(0, 1024, 256)]
    passes = 5
    with torch.inference_mode():
        for _ in range(3):
            for batch in batches:
                model(batch, tau=tau, threshold=threshold)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiled:
            for _ in range(passes):
                for batch in batches:
                    model(batch, tau=tau, threshold=threshold)
    forwards = passes * len(batches)
    rows = sorted(profiled.key_averages(group_by_input_shape=True), key=lambda row: -row.self_cpu_time_total)
    print(f"{'at ' + args.rev if args.rev else 'this tree'}: routed forward, batch 256, {forwards} forwards; "
          f"self CPU ms per batch, calls per batch, operator, first input's shape")
    for row in rows[:80]:
        shape = row.input_shapes[0] if row.input_shapes else []
        print(f"{row.self_cpu_time_total / 1e3 / forwards:8.3f} {row.count / forwards:6.2f}  {row.key} {shape}")


def batch1_op_count(args) -> None:
    """ATen operators per single-image forward, routed and dense, averaged over the first 20 test images;
    with `--rev`, also for the model as that revision's drnet_core runs it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountOperators(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    model, meta, inputs, _ = setup(args.checkpoint)
    variants = [("this tree", model)] + ([(f"at {args.rev}", model_at(args.rev, args.checkpoint)[0])]
                                           if args.rev else [])
    for label, variant in variants:
        for name, threshold in (("routed", meta["default_threshold"]), ("dense", 0.0)):
            counter = CountOperators()
            with torch.inference_mode(), counter:
                for index in range(20):
                    variant(inputs[index:index + 1], tau=meta["default_tau"], threshold=threshold)
            total = sum(counter.calls.values()) / 20
            print(f"{label}, {name}: {total:.1f} operators per image; most frequent: "
                  + ", ".join(f"{op} {count / 20:.1f}" for op, count in counter.calls.most_common(6)))


def merged_reductions(args) -> None:
    """Batch 1 with each reduction's depthwise and pointwise convolutions merged into one full 3x3
    convolution (weights pointwise x depthwise; exact up to rounding), alternating with the model as it
    is, `bench`'s batch-1 row one repeat at a time, 8 * rounds repeats each."""
    import torch.nn.functional as F

    configure_cpu_memory()
    model, meta, inputs, _ = setup(args.checkpoint)
    tau, threshold = meta["default_tau"], meta["default_threshold"]
    merged = []
    for reduce in model.reductions:
        relu, depthwise, pointwise = reduce[0], reduce[1], reduce[2]
        weight = pointwise.weight * depthwise.weight.view(1, depthwise.out_channels, *depthwise.kernel_size)
        merged.append((reduce, relu, weight.contiguous(memory_format=torch.channels_last), pointwise.bias,
                       depthwise.stride, depthwise.padding))

    def use_merged(on: bool) -> None:
        for reduce, relu, weight, bias, stride, padding in merged:
            if on:
                def merged_forward(x, *, overwrite_input=False, relu=relu, weight=weight, bias=bias, stride=stride,
                                   padding=padding):
                    rectified = torch.relu_(x) if overwrite_input and isinstance(relu, nn.ReLU) else relu(x)
                    return F.conv2d(rectified, weight, bias, stride, padding)
                reduce.forward = merged_forward
            else:
                reduce.__dict__.pop("forward", None)

    with torch.inference_mode():
        # The batch of 256 each reduction receives in a routed forward: its shapes give the multiply-adds
        # below, and the reductions are timed alone on it at the end.
        separate, seen = inputs_seen(model.reductions, lambda: model(inputs[:256], tau=tau, threshold=threshold)[0],
                                     copy=True)
        reduction_inputs = [x for _, x in seen]
        outputs = [separate]
        use_merged(True)
        outputs.append(model(inputs[:256], tau=tau, threshold=threshold)[0])
        use_merged(False)
        print(f"largest logit difference, merged against separate: {float((outputs[0] - outputs[1]).abs().max()):.2g}")
        trace = model(inputs[:100], tau=tau, threshold=threshold)[1]
        separate_macs = merged_macs = 0
        for (reduce, _, weight, _, _, _), x in zip(merged, reduction_inputs):
            separate_macs += module_macs(reduce, *x.shape[-2:])
            merged_macs += reduce(x[:1]).shape[-2:].numel() * weight.numel()
    print(f"multiply-adds per image in the reductions: {separate_macs / 1e6:.2f} million as the network has them, "
          f"{merged_macs / 1e6:.2f} million merged; a routed image of the first 100 test images: "
          f"{float(model.mflops_per_instance(trace).mean()):.2f} million reported")
    runs = {False: [], True: []}
    for on in (False, True):
        use_merged(on)
        latency(model, inputs[:100], tau=tau, threshold=threshold, batch=1, warmup=1, repeats=1)
    for repeat in range(8 * args.rounds):
        for on in ((False, True) if repeat % 2 else (True, False)):
            use_merged(on)
            runs[on].append(latency(model, inputs[:100], tau=tau, threshold=threshold, batch=1, warmup=0, repeats=1))
    for on, rows in runs.items():
        print(f"{'merged' if on else 'separate'}: medians over {len(rows)} repeats, batch 1 dense "
              f"{statistics.median(r['dense_ms'] for r in rows):.2f} ms, routed {statistics.median(r['routed_ms'] for r in rows):.2f} ms, "
              f"efficiency {statistics.median(r['efficiency'] for r in rows):.3f}")
    gains = [m["efficiency"] - s["efficiency"] for m, s in zip(runs[True], runs[False])]
    print(f"paired difference in efficiency, median {statistics.median(gains):+.4f}, merged higher in "
          f"{sum(gain > 0 for gain in gains)} of {len(gains)}")
    with torch.inference_mode():
        for index, (reduce, x) in enumerate(zip(model.reductions, reduction_inputs)):
            times = {}
            for on in (False, True):
                use_merged(on)
                times[on] = mean_ms(lambda: reduce(x), 20)
            print(f"reduction {index} at batch 256: separate {times[False]:.2f} ms, merged {times[True]:.2f} ms")


def batch1_ops(args) -> None:
    """At batch 1, each operator of a separable-convolution branch at every cell's shape, in microseconds.

    Also a depthwise convolution computed other ways, since oneDNN's per-call cost dwarfs the
    arithmetic of one image: as `F.unfold` and a batched matmul, as nine multiply-adds of shifted views
    (both exact up to rounding), and as oneDNN's call with its weights reordered once beforehand, as
    inductor's CPU backend does (the same arithmetic).
    """
    import torch.nn.functional as F

    configure_cpu_memory()
    model, _, _, _ = setup(args.checkpoint, fold_batch_norms=False)
    for _ in range(args.rounds):
        for index, cell in enumerate(model.cells):
            branch = cell.edges[0][cell.branch_names.index("sep_conv_3x3")]
            relu, depthwise, pointwise, norm = branch[0], branch[1], branch[2], branch[3]
            x = torch.randn(1, cell.channels, cell.height, cell.width).contiguous(memory_format=torch.channels_last)
            kernel = depthwise.weight.reshape(cell.channels, 1, 9)
            taps = depthwise.weight.reshape(1, cell.channels, 9, 1, 1).unbind(2)

            def depthwise_unfolded() -> torch.Tensor:
                columns = F.unfold(x, 3, padding=1).view(cell.channels, 9, cell.height * cell.width)
                return torch.bmm(kernel, columns).view(1, cell.channels, cell.height, cell.width)

            def depthwise_per_tap() -> torch.Tensor:
                padded = F.pad(x, (1, 1, 1, 1))
                out = padded[:, :, :cell.height, :cell.width] * taps[0]
                for tap in range(1, 9):
                    row, column = divmod(tap, 3)
                    out.addcmul_(padded[:, :, row:row + cell.height, column:column + cell.width], taps[tap])
                return out

            parts = [("ReLU", lambda: relu(x)), ("depthwise 3x3", lambda: depthwise(x)),
                     ("pointwise", lambda: pointwise(x)), ("batch norm", lambda: norm(x)),
                     ("whole branch", lambda: branch(x))]
            depthwise_variants = [("depthwise by unfold", depthwise_unfolded), ("depthwise per tap", depthwise_per_tap)]
            with torch.inference_mode():
                try:
                    ones = [1, 1]  # padding, stride, dilation
                    packed = torch.ops.mkldnn._reorder_convolution_weight(depthwise.weight, ones, ones, ones,
                                                                          cell.channels, list(x.shape))
                    depthwise_variants.append(("depthwise, oneDNN, weights reordered once",
                                               lambda: torch.ops.mkldnn._convolution_pointwise(
                                                   x, packed, None, ones, ones, ones, cell.channels, "none", [], "")))
                except (AttributeError, RuntimeError) as error:  # a torch build without oneDNN
                    print(f"no reordered-weight oneDNN call here: {error}")
                for name, step in depthwise_variants:
                    assert torch.allclose(step(), depthwise(x), atol=1e-5), name
                row = {name: 1000 * mean_ms(step, 300) for name, step in parts + depthwise_variants}
            print(f"cell {index} ({cell.channels}x{cell.height}x{cell.width}), us: "
                  + ", ".join(f"{name} {us:.1f}" for name, us in row.items()), flush=True)


def batch1_always_on(args) -> None:
    """At batch 1, the part of a forward that routing cannot shorten, in microseconds per image.

    Timed two ways on the first 100 test images: as a whole forward at threshold 1, which executes no
    branch (stem, reductions, every cell's routing and bookkeeping, head), and as its parts alone, each
    on the inputs it really receives: the stem, each reduction, each cell's routing (its RouterNet, the
    recalibration, the threshold, the host read of the selection and the per-branch weight views, as
    `Cell.forward_single` does them) and the head. The executed branches are timed alone too
    (`cost.measure_branch_ms` at batch 1, each with its weighted add), so the dense and routed
    forwards split into the forward that executes nothing, the branches, and the rest. The last line
    says by how much the forward that executes nothing would have to shrink, in dense and routed alike,
    for efficiency 0.70 (negative: by how much it could grow).
    """
    import torch.nn.functional as F

    from drnet_core.router import recalibrate

    configure_cpu_memory()
    model, meta, inputs, _ = setup(args.checkpoint)
    tau, threshold = meta["default_tau"], meta["default_threshold"]
    images = [inputs[i:i + 1].contiguous(memory_format=torch.channels_last) for i in range(100)]
    parts = [model.stem, *model.reductions, *model.cells, model.head]
    seen: dict[nn.Module, list[torch.Tensor]] = collections.defaultdict(list)
    routed_mflops, executed = [], []
    with torch.inference_mode():
        for image in images:
            (_, trace), calls = inputs_seen(parts, lambda: model(image, tau=tau, threshold=threshold), copy=True)
            routed_mflops.append(float(model.mflops_per_instance(trace)))
            executed.append([mask[0].double() for mask in trace.executed])
            for module, x in calls:
                seen[module].append(x)
    flops_ratio = model.dense_mflops() / statistics.mean(routed_mflops)
    # Per cell, how many times each (connection, branch) ran per image, routed; dense runs each once.
    runs_per_image = [sum(masks[index] for masks in executed) / len(images) for index in range(len(model.cells))]

    def routing(cell) -> None:
        for x in seen[cell]:
            weights = recalibrate(cell.router(x), tau, training=False)
            (weights >= threshold).tolist()
            weights.reshape(-1).unbind()

    def each(module):
        return lambda: [module(x) for x in seen[module]]

    with torch.inference_mode():
        nothing_ran = sum(int(mask.sum()) for x in images for mask in model(x, tau=tau, threshold=1.0)[1].executed)
    forwards = {"routed forward": lambda: [model(x, tau=tau, threshold=threshold) for x in images],
                "dense forward": lambda: [model(x, tau=tau, threshold=0.0) for x in images],
                "forward at threshold 1": lambda: [model(x, tau=tau, threshold=1.0) for x in images]}
    # Without overwrite_input: the recorded inputs are reused from call to call.
    parts_alone = {"stem": each(model.stem)}
    parts_alone.update({f"reduction {index}": each(reduce) for index, reduce in enumerate(model.reductions)})
    parts_alone.update({f"routing, cell {index}": (lambda cell=cell: routing(cell))
                        for index, cell in enumerate(model.cells)})
    parts_alone["head"] = each(model.head)
    print(f"batch 1, microseconds per image (mean of 100 test images, median of {args.rounds} rounds); "
          f"FLOPs ratio {flops_ratio:.2f}; branches executed at threshold 1: {nothing_ran}", flush=True)
    always_on_mmacs = model.always_on_macs / 1e6
    branch_mmacs = {"routed": statistics.mean(routed_mflops) - always_on_mmacs,
                    "dense": model.dense_mflops() - always_on_mmacs}
    wanted = 0.70 * flops_ratio  # the speedup efficiency 0.70 needs
    # The machine's speed drifts between rounds, so every figure is derived within a round, then medians.
    derived: dict[str, list[float]] = collections.defaultdict(list)
    with torch.inference_mode():
        for index in range(args.rounds):
            us = {name: 1000 * mean_ms(step, 3) / len(images) for name, step in {**forwards, **parts_alone}.items()}
            branch_us = [1000 * measure_branch_ms(cell, batch_size=1, repeats=100) for cell in model.cells]
            us["routed branches"] = sum(float((times * runs).sum()) for times, runs in zip(branch_us, runs_per_image))
            us["dense branches"] = sum(float(times.sum()) for times in branch_us)
            dense, routed, always_on = us["dense forward"], us["routed forward"], us["forward at threshold 1"]
            derived["efficiency"].append(dense / routed / flops_ratio)
            derived["saving"].append((wanted * routed - dense) / (wanted - 1))  # (dense - s) / (routed - s) = wanted
            derived["always_on"].append(always_on)
            derived["parts"].append(sum(us[name] for name in parts_alone))
            derived["routing"].append(sum(us[name] for name in parts_alone if name.startswith("routing")))
            for mode in ("routed", "dense"):
                forward, branches = us[f"{mode} forward"], us[f"{mode} branches"]
                derived[f"{mode} forward"].append(forward)
                derived[f"{mode} always-on"].append(100 * always_on / forward)
                derived[f"{mode} branches"].append(100 * branches / forward)
                derived[f"{mode} rest"].append(100 * (forward - always_on - branches) / forward)
                derived[f"{mode} us per million"].append(branches / branch_mmacs[mode])
            print(f"round {index + 1}: " + ", ".join(f"{name} {time:.1f}" for name, time in us.items())
                  + f"; efficiency {derived['efficiency'][-1]:.3f}, saving for 0.70 {derived['saving'][-1]:.1f}",
                  flush=True)
    median = {name: statistics.median(values) for name, values in derived.items()}
    print(f"medians of the rounds: efficiency {median['efficiency']:.3f}; the forward that executes nothing "
          f"{median['always_on']:.1f} us for {always_on_mmacs:.3f} million multiply-adds; "
          f"its parts alone {median['parts']:.1f} us, of which routing {median['routing']:.1f}")
    for mode in ("routed", "dense"):
        print(f"  {mode}: forward {median[f'{mode} forward']:.1f} us = executing nothing "
              f"{median[f'{mode} always-on']:.0f}% + executed branches alone {median[f'{mode} branches']:.0f}% "
              f"+ the rest {median[f'{mode} rest']:.0f}%; branches {branch_mmacs[mode]:.2f} million multiply-adds, "
              f"{median[f'{mode} us per million']:.0f} us per million")
    # Routing's operators one by one, each alone on cell 0's first input (the median of five means).
    cell, x = model.cells[0], seen[model.cells[0]][0]
    hidden, output = cell.router.mlp[2], cell.router.mlp[4]
    with torch.inference_mode():
        pooled = x.mean(dim=(2, 3))
        features = torch.relu(F.linear(pooled, hidden.weight, hidden.bias))
        logits = F.linear(features, output.weight, output.bias).view(1, len(cell.connections), -1)
        weights = recalibrate(logits, tau, training=False)
        selected = weights >= threshold
        operators = {"mean": lambda: x.mean(dim=(2, 3)),
                     "linear 1": lambda: F.linear(pooled, hidden.weight, hidden.bias),
                     "ReLU": lambda: torch.relu(features),
                     "linear 2": lambda: F.linear(features, output.weight, output.bias),
                     "view": lambda: logits.view(1, -1),
                     "softmax": lambda: recalibrate(logits, tau, training=False),
                     "threshold": lambda: weights >= threshold,
                     "host read": lambda: selected.tolist(),
                     "weight views": lambda: weights.reshape(-1).unbind(),
                     "the router module": lambda: cell.router(x)}
        print("  routing's operators alone, cell 0, us: " + ", ".join(
            f"{name} {statistics.median(1000 * mean_ms(step, 1000) for _ in range(5)):.1f}"
            for name, step in operators.items()))
    saving = median["saving"]
    print(f"  efficiency 0.70 needs the forward that executes nothing {saving:.1f} us shorter, in both modes"
          if saving > 0 else
          f"  efficiency stays at least 0.70 with the forward that executes nothing up to {-saving:.1f} us longer")


def package_at(revision: str) -> str:
    """Import drnet_core as it was at a git revision, beside this tree's, and return its module name."""
    archive = subprocess.run(["git", "archive", revision, "drnet_core"], cwd=ROOT, capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"against-commit: git cannot read drnet_core at {revision!r}: "
                         f"{archive.stderr.decode(errors='replace').strip()}")
    target = Path(tempfile.mkdtemp(prefix="drnet_core_at_"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    name = "drnet_core_at_" + re.sub(r"\W", "_", revision)
    spec = importlib.util.spec_from_file_location(name, target / "drnet_core" / "__init__.py",
                                                  submodule_search_locations=[str(target / "drnet_core")])
    sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[name])
    return name


def model_at(revision: str, checkpoint: str | None):
    """The checkpoint loaded by drnet_core as it was at `revision`, batch norms folded where that revision
    can fold them (as this tree's `setup` does), its metadata, and the name of that package."""
    name = package_at(revision)
    checkpoint_module = importlib.import_module(f"{name}.checkpoint")
    folds = "fold_batch_norms" in inspect.signature(checkpoint_module.load_checkpoint).parameters
    # The shipped path is passed explicitly: that package's own default points into its temporary copy.
    model, meta = checkpoint_module.load_checkpoint(checkpoint or SHIPPED_CHECKPOINT,
                                                    **({"fold_batch_norms": True} if folds else {}))
    if not folds:
        print(f"{revision} cannot fold batch norms: it runs unfolded, this tree folded", file=sys.stderr)
    return model, meta, name


def against_commit(args) -> None:
    """Routed speed of this tree's drnet_core against another revision's, alternating in one process.

    The machine's speed drifts by up to 2x between runs, so two `bench` runs a few minutes apart
    cannot resolve a 10% change; alternating both versions in one process on the same batches can.
    Each round times a routed batch of 256 on one thread and the 10k evaluation; then bench's batch-1
    row, and its batch-256 row, alternate between the versions, 4 * rounds times each.
    """
    if not args.rev:
        raise SystemExit("against-commit needs --rev, e.g. --rev HEAD~1")
    configure_cpu_memory()
    before, _, name = model_at(args.rev, args.checkpoint)
    before_evaluate = importlib.import_module(f"{name}.evaluate")
    model, meta, inputs, labels = setup(args.checkpoint)
    tau, threshold = meta["default_tau"], meta["default_threshold"]
    variants = ((f"at {args.rev}", before, before_evaluate.run_routed), ("this tree", model, run_routed))
    print(same_results(*(run(m, inputs[:2000], labels[:2000], tau=tau, threshold=threshold) for _, m, run in variants)))
    batches = [inputs[i:i + 256] for i in range(0, 2560, 256)]
    threads = torch.get_num_threads()
    for round_index in range(args.rounds):
        for label, variant, run in variants:
            torch.set_num_threads(1)
            with torch.inference_mode():
                start = time.perf_counter()
                for batch in batches:
                    variant(batch, tau=tau, threshold=threshold)
                one_thread_ms = 1e3 * (time.perf_counter() - start) / len(batches)
            torch.set_num_threads(threads)
            start = time.perf_counter()
            run(variant, inputs, labels, tau=tau, threshold=threshold)
            print(f"round {round_index + 1}, {label}: routed batch of 256 on one thread {one_thread_ms:.1f} ms, "
                  f"{len(inputs):,}-image evaluation on {threads} threads {time.perf_counter() - start:.2f} s", flush=True)
    # Efficiency moves by a few hundredths while the machine changes state within seconds, so the two
    # versions alternate every pair of dense and routed passes (bench's latency rows, one repeat: 100
    # single images, or four distinct batches of 256), and what is compared is the paired difference.
    for batch, images in ((1, 100), (256, 1024)):
        efficiency = {label: [] for label, _, _ in variants}
        for label, variant, _ in variants:
            latency(variant, inputs[:images], tau=tau, threshold=threshold, batch=batch, warmup=1, repeats=1)
        for repeat in range(4 * args.rounds):
            for label, variant, _ in (variants if repeat % 2 == 0 else variants[::-1]):
                row = latency(variant, inputs[:images], tau=tau, threshold=threshold, batch=batch, warmup=0, repeats=1)
                efficiency[label].append(row["efficiency"])
                print(f"batch {batch}, repeat {repeat + 1}, {label}: dense {row['dense_ms']:.2f} ms, "
                      f"routed {row['routed_ms']:.2f} ms, efficiency {row['efficiency']:.3f}", flush=True)
        (before_label, before_runs), (after_label, after_runs) = efficiency.items()
        gains = [after - before for before, after in zip(before_runs, after_runs)]
        print(f"batch {batch} efficiency, medians over {len(gains)} repeats: {before_label} "
              f"{statistics.median(before_runs):.3f}, {after_label} {statistics.median(after_runs):.3f}; paired "
              f"difference median {statistics.median(gains):+.4f}, {after_label} higher in {sum(g > 0 for g in gains)}")


CUDA_SHAPE_VARIANTS = {"padded": (None, True), "unpadded": (False, True),
                       "padded, cuDNN off": (None, False), "unpadded, cuDNN off": (False, False)}


def cuda_shapes(args) -> None:
    """On CUDA every new sub-batch size costs a convolution plan; each variant runs in a fresh process."""
    if not torch.cuda.is_available():
        sys.exit("cuda-shapes needs a CUDA device")
    for _ in range(args.rounds):
        for variant in CUDA_SHAPE_VARIANTS:
            print(in_fresh_process(args, "cuda-shapes-once", "--variant", variant).strip())


def cuda_shapes_once(args) -> None:
    """The 10k evaluation at the default setting (cold), at three new thresholds (slider moves), then warm."""
    from drnet_core.cell import Cell
    from drnet_core.checkpoint import default_device
    from drnet_core.cost import synchronize

    pad, cudnn = CUDA_SHAPE_VARIANTS[args.variant]
    Cell.pad_sub_batches = pad
    torch.backends.cudnn.enabled = cudnn
    model, meta = load_checkpoint(args.checkpoint, device=default_device(), fold_batch_norms=True)
    test = load_test_set()
    inputs, labels, tau = to_model_input(test.images), test.labels, meta["default_tau"]
    seconds = {}
    for name, threshold in (("cold", meta["default_threshold"]), ("threshold 0.1", 0.1), ("threshold 0.2", 0.2),
                            ("threshold 0.3", 0.3), ("warm", meta["default_threshold"])):
        start = time.perf_counter()
        run = run_routed(model, inputs, labels, tau=tau, threshold=threshold)
        synchronize(model.device)
        seconds[name] = round(time.perf_counter() - start, 3)
        if name == "cold":
            accuracy = float(run.correct.float().mean())
    print(json.dumps({"variant": args.variant, "accuracy_at_default": accuracy, "seconds": seconds}))


EXPERIMENTS = {
    "eval-batch": eval_batch, "modules": modules, "allocator": allocator, "fold-bn": fold_bn,
    "gather-scatter": gather_scatter, "pooling": pooling, "eval-workers": eval_workers,
    "eval-workers-once": eval_workers_once, "without-pooling": without_pooling, "compile": compile_experiment,
    "audit-time": audit_time, "batch1-ops": batch1_ops, "batch1-always-on": batch1_always_on,
    "against-commit": against_commit, "cuda-shapes": cuda_shapes, "cuda-shapes-once": cuda_shapes_once,
    "cell-overhead": cell_overhead, "latency-processes": latency_processes, "latency-once": latency_once,
    "batch1-op-count": batch1_op_count, "merged-reductions": merged_reductions,
    "modules-over-time": modules_over_time, "split-batch": split_batch, "stem": stem_variants,
    "forward-profile": forward_profile,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=list(EXPERIMENTS))
    parser.add_argument("--checkpoint", default=None, help="DRNet checkpoint (default: the shipped one)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per experiment")
    parser.add_argument("--keep-freed-memory", choices=["on", "off"], default="on", help="modules, eval-batch: the allocator setting")
    parser.add_argument("--workers", choices=["1", "2"], default="2", help="eval-workers-once: batches at a time")
    parser.add_argument("--rev", default=None,
                        help="against-commit, latency-processes, batch1-op-count, forward-profile: the git revision to compare with")
    parser.add_argument("--variant", choices=list(CUDA_SHAPE_VARIANTS), default="padded", help="cuda-shapes-once")
    parser.add_argument("--profile-cell", type=int, default=None, help="cell-overhead: also profile this cell's operators")
    parser.add_argument("--seconds", type=float, default=300, help="modules-over-time: how long to keep measuring")
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUT_VARIANTS), default=list(LAYOUT_VARIANTS),
                        help="latency-processes: the memory layouts to alternate (default: all three)")
    args = parser.parse_args()
    torch.manual_seed(0)
    EXPERIMENTS[args.experiment](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
