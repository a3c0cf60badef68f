"""Several processes: 2 CPU processes on localhost (gloo), checked against one process.

Two torchrun launches of the real CLI (train, evaluate) and one torch.multiprocessing launch of the
library calls (resume, sharded sweep, noisy sharded run). Each is bounded by a timeout, kills its
processes when it overruns, and binds only to 127.0.0.1 on a free port.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from harness.chromium import LAUNCH_TIMEOUT_S, free_port
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from drnet_core import cli
from drnet_core.net.checkpoint import load_checkpoint
from drnet_core.training.config import PRESETS
from drnet_core.analysis.distributed import (DistributedContext, run_routed_sharded, shard_bounds, state_fingerprint,
                                    sweep_sharded)
from drnet_core.analysis.evaluate import run_routed, sweep
from drnet_core.training.train import train

from helpers import tiny_model, write_fake_fashion

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")]


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "drnet_core", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    env.pop("WORLD_SIZE", None)
    # A session of its own, so that an overrun kills torchrun and both workers, not torchrun alone.
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"torchrun {args[0]} did not finish within {LAUNCH_TIMEOUT_S} s")
    assert process.returncode == 0, f"torchrun failed ({process.returncode}):\n{stderr[-4000:]}"
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny preset trained for one epoch by `torchrun --nproc_per_node=2 -m drnet_core train`."""
    folder = tmp_path_factory.mktemp("ddp")
    data = write_fake_fashion(folder / "data", train=288, test=40)
    output = folder / "tiny_ddp.pt"
    result = torchrun(["train", "--preset", "tiny", "--output", str(output), "--data-dir", str(data),
                       "--no-progress"], folder)
    return folder, data, output, result


def test_both_ranks_end_with_the_weights_rank_0_saved(trained):
    _, _, output, result = trained
    model, meta = load_checkpoint(output)
    replicas = meta["distributed"]
    assert replicas["world_size"] == 2 and replicas["backend"] == "gloo"
    first, second = replicas["replica_sha256"]
    assert first == second and replicas["replicas_in_sync"]
    assert state_fingerprint(model) == first
    # Only rank 0 printed the summary.
    assert result.stdout.count('"default_tau"') == 1


def test_training_used_both_ranks_and_left_a_resume_file(trained):
    _, _, output, _ = trained
    meta = load_checkpoint(output)[1]
    # The preset keeps 256 images, 64 of them for validation: each rank trains on 96, 3 batches of 32.
    # The epoch's image count is summed over both ranks (one rank alone would report 96).
    record = meta["history"][0]
    assert record["images_per_second"] * record["seconds"] == pytest.approx(2 * 3 * 32, rel=1e-3)
    assert len(meta["validation_sweep"]) > 0 and "test_default" in meta
    resume = torch.load(output.with_name(output.name + ".resume.pt"), map_location="cpu", weights_only=True)
    per_rank = resume["rng_per_rank"]
    assert len(per_rank) == 2 and not torch.equal(per_rank[0]["cpu"], per_rank[1]["cpu"])
    assert resume["epoch"] == 1


def test_sharded_evaluate_equals_one_process(trained, capsys):
    folder, data, output, _ = trained
    # Batches of 8 over 40 images: rank 0 runs 3 batches, rank 1 runs 2; with Gumbel noise on.
    args = ["evaluate", "--checkpoint", str(output), "--data-dir", str(data), "--json", "--batch-size", "8",
            "--noise-seed", "5", "--threshold", "0.2"]
    sharded = json.loads(torchrun(args, folder).stdout)
    assert cli.main(args) == 0
    single = json.loads(capsys.readouterr().out)
    assert sharded == single and sharded["n"] == 40


def spawn_workers(worker, *args, nprocs: int = 2) -> None:
    """Run worker(rank, port, *args) in `nprocs` fresh processes; kill them all if they overrun."""
    context = mp.start_processes(worker, args=(free_port(), *args), nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"{worker.__name__} did not finish within {LAUNCH_TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


def _collective_checks(rank: int, port: int, folder: str, data: str) -> None:
    """In each of 2 gloo processes: resume from a copied resume file, then a sharded sweep and routed run."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=LAUNCH_TIMEOUT_S))
    ctx = DistributedContext(torch.device("cpu"))
    preset = PRESETS["tiny"]
    # Rank 0 alone reads the resume file; a finished run resumes past its last epoch without training.
    meta = train(preset.model, preset.train, Path(folder) / "resumed.pt", data_dir=data, progress=False,
                 evaluate_test=False)
    model = tiny_model()
    generator = torch.Generator().manual_seed(1)
    inputs, labels = torch.randn(40, 1, 28, 28, generator=generator), torch.arange(40) % 10
    grid = {"taus": (0.5, 2.0), "thresholds": (0.0, 0.15, 0.3)}
    run = run_routed_sharded(model, inputs, labels, tau=1.0, threshold=0.2, noise_seed=5, batch_size=8, ctx=ctx)
    single = run_routed(model, inputs, labels, tau=1.0, threshold=0.2, noise_seed=5, batch_size=8)
    fields = ("predictions", "probabilities", "mflops", "active_params", "path_masks", "branch_weights")
    result = {
        "meta": meta,
        "replica": state_fingerprint(load_checkpoint(Path(folder) / "resumed.pt")[0]) if rank == 0 else None,
        "sweep_sharded": sweep_sharded(model, inputs, labels, progress=False, batch_size=16, ctx=ctx, **grid),
        "sweep_single": sweep(model, inputs, labels, batch_size=16, **grid),
        "run_sharded": {name: getattr(run, name) for name in fields},
        "run_single": {name: getattr(single, name) for name in fields},
    }
    torch.save(result, Path(folder) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def collective(trained):
    folder, data, output, _ = trained
    work = folder / "collective"
    work.mkdir()
    # Only the resume file is copied: the resumed state must come from it, sent by rank 0.
    shutil.copy(output.with_name(output.name + ".resume.pt"), work / "resumed.pt.resume.pt")
    spawn_workers(_collective_checks, str(work), str(data))
    return [torch.load(work / f"rank{rank}.pt", weights_only=True) for rank in range(2)], output


def test_a_finished_run_resumes_on_every_rank_from_rank_0s_file(collective):
    (rank0, rank1), output = collective
    original = load_checkpoint(output)[1]
    assert rank1["meta"] == {} and rank0["meta"]["history"] == original["history"]  # no epoch was retrained
    assert rank0["replica"] == original["distributed"]["replica_sha256"][0]
    assert rank0["meta"]["distributed"]["replicas_in_sync"]


def test_sharded_sweep_equals_one_process_on_every_rank(collective):
    ranks, _ = collective
    for result in ranks:
        assert result["sweep_sharded"] == result["sweep_single"]
    # The grid really changes what runs (threshold 0 is dense), so equal rows are not trivially equal.
    assert len({round(row["mean_mflops"], 6) for row in ranks[0]["sweep_single"]}) > 1


def test_sharded_noisy_run_equals_one_process_bit_for_bit(collective):
    ranks, _ = collective
    for result in ranks:
        for name, single in result["run_single"].items():
            assert torch.equal(result["run_sharded"][name], single), name


@pytest.mark.parametrize("count,batch,world", [(40, 8, 2), (41, 8, 3), (5, 8, 2), (1000, 7, 4)])
def test_shards_are_whole_batches_covering_the_set_in_order(count, batch, world):
    bounds = [shard_bounds(count, batch, world, rank) for rank in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == count
    for (_, stop), (start, _) in zip(bounds, bounds[1:]):
        assert stop == start and (start % batch == 0 or start == count)


def test_one_process_context_is_exactly_run_routed():
    model = tiny_model()
    inputs = torch.randn(24, 1, 28, 28)
    labels = torch.arange(24) % 10
    ctx = DistributedContext(torch.device("cpu"))
    assert not ctx.distributed
    sharded = run_routed_sharded(model, inputs, labels, tau=1.0, threshold=0.2, noise_seed=3, batch_size=8, ctx=ctx)
    single = run_routed(model, inputs, labels, tau=1.0, threshold=0.2, noise_seed=3, batch_size=8)
    assert torch.equal(sharded.path_masks, single.path_masks) and torch.equal(sharded.probabilities,
                                                                              single.probabilities)
