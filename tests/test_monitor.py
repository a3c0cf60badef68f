"""What training reports as it runs: TensorBoard scalars (`train --log-dir`, read back with TensorBoard's own
event reader) and progress bars that stay out of logs unless a terminal is watching (`--progress`)."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from drnet_core import cli

from drnet_core.cli import commands
from drnet_core.net.model import RoutingTrace
from drnet_core.training.monitor import TrainingMonitor, pattern_entropy_bits, routing_scalars

from helpers import tiny_model, write_fake_fashion

ROOT = Path(__file__).resolve().parent.parent


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_train_log_dir_writes_epoch_schedule_and_per_cell_routing_scalars(tmp_path):
    data = write_fake_fashion(tmp_path / "data", train=96, test=40)
    log_dir = tmp_path / "tb"
    # 96 images, 16 held out, batches of 16: 5 steps per epoch, routing scalars every 2 steps.
    assert cli.main(["train", "--preset", "tiny", "--data-dir", str(data), "--output", str(tmp_path / "m.pt"),
                     "--epochs", "2", "--limit", "96", "--val-size", "16", "--batch-size", "16", "--skip-test",
                     "--progress", "off", "--log-dir", str(log_dir), "--log-every", "2"]) == 0
    scalars = read_scalars(log_dir)

    for tag in ("epoch/train_loss", "epoch/train_accuracy", "epoch/expected_cost_fraction", "epoch/train_mflops",
                "epoch/val_accuracy", "epoch/val_mflops", "epoch/tau", "epoch/lr"):
        assert [step for step, _ in scalars[tag]] == [1, 2], tag
    for tag in ("step/loss", "step/expected_cost_fraction", "step/executed_mflops", "schedule/tau",
                "schedule/threshold", "schedule/lr", "routing/network/distinct_paths",
                "routing/network/path_entropy_bits"):
        assert [step for step, _ in scalars[tag]] == [2, 4, 6, 8, 10], tag
    model = tiny_model()
    for cell in range(1, len(model.cells) + 1):
        for branch in model.config.branches:
            assert all(0 <= value <= 1 for _, value in scalars[f"routing/cell{cell}/usage/{branch}"])
        for (_, distinct), (_, entropy) in zip(scalars[f"routing/cell{cell}/distinct_patterns"],
                                               scalars[f"routing/cell{cell}/path_entropy_bits"]):
            # A window holds 2 steps of 16 images: at most 32 patterns, at most log2(distinct) bits.
            assert 1 <= distinct <= 32 and 0 <= entropy <= math.log2(distinct) + 1e-6
    taus = [value for _, value in scalars["schedule/tau"]]
    assert taus == sorted(taus, reverse=True) and taus[0] > taus[-1]  # tau anneals
    checkpoint = torch.load(tmp_path / "m.pt", weights_only=True)
    history = checkpoint["meta"]["history"]
    assert [value for _, value in scalars["epoch/train_loss"]] == pytest.approx([r["train_loss"] for r in history])
    assert [value for _, value in scalars["epoch/val_accuracy"]] == pytest.approx([r["val_accuracy"] for r in history])


def trace_of(executed: list[torch.Tensor]) -> RoutingTrace:
    return RoutingTrace([torch.zeros(m.shape) for m in executed], [m.float() for m in executed], executed)


def test_a_collapsing_router_shows_as_one_pattern_and_zero_entropy():
    generator = torch.Generator().manual_seed(0)
    shape = (64, 3, 4)  # instances, connections, branches
    diverse = torch.rand(shape, generator=generator) < 0.5
    collapsed = torch.zeros(shape, dtype=torch.bool)
    collapsed[:, :, 3] = True  # every instance runs only the last branch on every connection
    names = [("a", "b", "c", "d")] * 2
    scalars = routing_scalars([diverse, collapsed], names)
    assert scalars["routing/cell1/distinct_patterns"] > 30 and scalars["routing/cell1/path_entropy_bits"] > 4
    assert scalars["routing/cell2/distinct_patterns"] == 1 and scalars["routing/cell2/path_entropy_bits"] == 0
    assert [scalars[f"routing/cell2/usage/{b}"] for b in "abcd"] == [0, 0, 0, 1]
    assert pattern_entropy_bits(torch.eye(4, dtype=torch.bool)) == (4, 2.0)


def test_routing_scalars_cover_each_window_of_steps(tmp_path):
    model = tiny_model()
    monitor = TrainingMonitor(tmp_path, model, routing_every=3)
    shapes = model.routing_shape()
    for step in range(6):
        # The first window is dense, the second collapses onto one cheap pattern.
        value = step < 3
        executed = [torch.full((8, c, b), value, dtype=torch.bool) for c, b in shapes]
        if value:
            executed = [torch.rand(m.shape, generator=torch.Generator().manual_seed(step)) < 0.5 for m in executed]
        monitor.record_step(step, trace_of(executed), loss=1.0, expected_cost=0.5, tau=1.0, threshold=0.1, lr=0.01)
    monitor.close()
    distinct = dict(read_scalars(tmp_path)["routing/network/distinct_paths"])
    assert set(distinct) == {3, 6} and distinct[3] == 24 and distinct[6] == 1


def test_without_a_log_dir_the_monitor_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monitor = TrainingMonitor(None, tiny_model(), routing_every=1)
    executed = [torch.ones((2, c, b), dtype=torch.bool) for c, b in tiny_model().routing_shape()]
    monitor.record_step(0, trace_of(executed), loss=1.0, expected_cost=0.5, tau=1.0, threshold=0.1, lr=0.01)
    monitor.record_epoch(1, {"train_loss": 1.0}, tau=1.0, lr=0.01)
    monitor.close()
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("setting, is_tty, rank, expected", [
    ("auto", True, "0", True), ("auto", False, "0", False), ("auto", True, "1", False),
    ("on", False, "0", True), ("off", True, "0", False)])
def test_progress_auto_draws_bars_only_for_a_terminal_and_rank_0(monkeypatch, setting, is_tty, rank, expected):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: is_tty)
    monkeypatch.setenv("RANK", rank)
    args = cli.build_parser().parse_args(["sweep", "--progress", setting])
    assert commands.show_progress(args) is expected


def test_a_log_gets_no_progress_bars_unless_asked(tmp_path):
    def sweep(*extra: str) -> str:
        result = subprocess.run([sys.executable, "-m", "drnet_core", "sweep", "--limit", "300", "--batch-size", "100",
                                 "--taus", "1", "--thresholds", "0.05", "--output", str(tmp_path / "s.csv"), *extra],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stderr

    quiet = sweep("--progress", "auto")  # stderr is a pipe here, as under CI
    assert "it/s" not in quiet and "%|" not in quiet
    drawn = sweep("--progress", "on")
    assert "it/s" in drawn
