"""`bench` reports every figure with sane types; static baselines build, train, cost and reload.

No timing is asserted anywhere: timings depend on the machine and its load.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from drnet_core.net.baselines import (BaselineConfig, PlainCNN, StaticCellNet, build_baseline, load_baseline,
                                  most_picked_branches, plain_cnn_widths)
from drnet_core.net.checkpoint import CheckpointError, save_checkpoint, sha256_of
from drnet_core.training.config import PRESETS
from drnet_core.training.train import train
from helpers import run_cli, tiny_model, write_fake_fashion

ROOT = Path(__file__).resolve().parent.parent
TINY = PRESETS["tiny"]
BUNDLED_BASELINES = sorted((ROOT / "assets" / "baselines").glob("*.pt"))


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    data = write_fake_fashion(root / "data", train=96, test=40)
    checkpoint = save_checkpoint(root / "tiny.pt", tiny_model(), {
        "dataset": "fashion-mnist", "default_tau": 0.7, "default_threshold": 0.2,
        "train_config": TINY.train.to_dict(), "history": [{"seconds": 1.5}]})
    return data, checkpoint


def test_bench_json_has_every_field(tiny_setup):
    data, checkpoint = tiny_setup
    done = run_cli("bench", "--json", "--checkpoint", str(checkpoint), "--data-dir", str(data), "--limit", "40",
                   "--single-images", "4", "--warmup", "1", "--repeats", "2", "--train-steps", "1", "--threads", "1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    machine = result["machine"]
    assert machine["cpu_cores"] >= 1 and machine["torch_threads"] == 1
    assert machine["torch_version"] == str(torch.__version__) and isinstance(machine["device"], str)
    # The CLI asks for huge pages wherever the kernel offers them, unless the environment already says.
    from drnet_core.runtime import HUGE_PAGES_VARIABLE, MODES_WITH_HUGE_PAGES, system_huge_pages
    offered = "1" if system_huge_pages() in MODES_WITH_HUGE_PAGES else None
    asked = os.environ.get(HUGE_PAGES_VARIABLE, offered) == "1"
    assert machine["huge_pages"] == {"torch_allocator": asked, "system": system_huge_pages()}
    assert result["settings"]["tau"] == 0.7 and result["settings"]["threshold"] == 0.2
    model = tiny_model()
    for key, batch in (("batch_1", 1), ("batch_256", 40)):  # the big batch is capped by the 40 test images
        row = result["latency"][key]
        assert row["batch"] == batch
        for field in ("dense_ms", "routed_ms", "speedup", "flops_ratio", "efficiency"):
            assert isinstance(row[field], float) and row[field] > 0, field
        assert row["dense_mflops"] == pytest.approx(model.dense_mflops())
        assert row["flops_ratio"] == pytest.approx(row["dense_mflops"] / row["routed_mean_mflops"])
        assert row["efficiency"] == pytest.approx(row["speedup"] / row["flops_ratio"])
        share = result["router"][key]
        assert 0 < share["flops_share"] < 1 and share["time_share"] > 0
        assert share["router_mflops"] == pytest.approx(sum(c.router_macs for c in model.cells) / 1e6)
    timed = result["time_model"]
    assert timed["batch"] == 40 and set(timed["branch_ms"]) == {f"cell_{i}" for i in range(len(model.cells))}
    assert all(list(row) == list(model.config.branches) and min(row.values()) > 0 for row in timed["branch_ms"].values())
    # Dense runs every branch, so its predicted time is the always-on part plus the whole table.
    table_ms = sum(sum(row.values()) * len(cell.connections)
                   for row, cell in zip(timed["branch_ms"].values(), model.cells))
    assert timed["predicted_dense_ms"] == pytest.approx(timed["always_on_ms"] + table_ms)
    assert timed["always_on_ms"] < timed["predicted_routed_ms"] <= timed["predicted_dense_ms"]
    assert timed["time_ratio"] == pytest.approx(timed["predicted_dense_ms"] / timed["predicted_routed_ms"])
    assert timed["executor_efficiency"] == pytest.approx(
        timed["measured_dense_ms"] / timed["measured_routed_ms"] / timed["time_ratio"])
    assert 0 <= timed["zero_mac_branch_share"] < 1 and 0 < timed["always_on_share"] < 1
    evaluation = result["evaluation"]
    assert evaluation["images"] == 40
    assert evaluation["cold_images_per_second"] == pytest.approx(40 / evaluation["cold_seconds"])
    assert evaluation["warm_seconds"] > 0
    training = result["training"]
    assert training["batch_size"] == TINY.train.batch_size and training["images_per_second"] > 0
    assert training["epoch_images"] == 96 - TINY.train.val_size
    assert training["recorded_epoch_seconds"] == [1.5]


def test_bench_table_and_bad_arguments(tiny_setup):
    data, checkpoint = tiny_setup
    done = run_cli("bench", "--checkpoint", str(checkpoint), "--data-dir", str(data), "--limit", "8",
                   "--single-images", "2", "--warmup", "1", "--repeats", "1", "--train-steps", "1",
                   "--tau", "1.5", "--threshold", "0.1", "--big-batch", "4")
    assert done.returncode == 0, done.stderr
    assert "efficiency" in done.stdout and "images/s" in done.stdout and "time model" in done.stdout
    assert "routed = tau 1.5, threshold 0.1;" in done.stdout  # not the checkpoint's 0.7 / 0.2
    assert re.search(r"^\s+4\s+[\d.]+\s+[\d.]+", done.stdout, re.M)  # a latency row at the chosen big batch
    assert "time model at batch 4:" in done.stdout
    for args, message in ((("--repeats", "0"), "must be at least 1"), (("--threshold", "1.5"), "threshold must be in [0, 1]"),
                          (("--big-batch", "0"), "must be at least 1"),
                          (("--tau", "0"), "tau must be > 0")):
        bad = run_cli("bench", *args)
        assert bad.returncode != 0 and message in bad.stderr and "Traceback" not in bad.stderr


def test_static_cell_net_costs_and_flop_counter_agree():
    base = TINY.model.to_dict()
    branches = ("sep_conv_3x3", "identity", "max_pool_3x3") * 2
    model = StaticCellNet(BaselineConfig("static-cells", base=base, branches=branches)).eval()
    drnet = tiny_model()
    # Stem, reductions and head as the DRNet's, plus the chosen branches' own cost; no routers.
    expected = (drnet.always_on_macs - sum(c.router_macs for c in drnet.cells)
                + sum(float(cell.branch_macs[e, cell.branch_names.index(name)])
                      for cell, names in zip(drnet.cells, (branches[:3], branches[3:]))
                      for e, name in enumerate(names)))
    assert model.dense_mflops() == pytest.approx(expected / 1e6)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        logits, trace = model(torch.randn(1, 1, 28, 28))
    assert logits.shape == (1, 10)
    assert counter.get_total_flops() / 2 / 1e6 == pytest.approx(model.dense_mflops())
    assert float(model.mflops_per_instance(trace)[0]) == pytest.approx(model.dense_mflops())


def test_plain_cnn_lands_near_its_target():
    for target in (1.0, 4.0):
        widths = plain_cnn_widths(target)
        model = PlainCNN(BaselineConfig("plain-cnn", widths=widths))
        assert abs(model.dense_mflops() - target) / target < 0.2
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model.eval()(torch.randn(1, 1, 28, 28))
        assert counter.get_total_flops() / 2 / 1e6 == pytest.approx(model.dense_mflops())


def test_most_picked_branches_follow_the_router():
    model = tiny_model()
    inputs = torch.randn(32, 1, 28, 28)
    names = most_picked_branches(model, inputs, tau=0.7, threshold=0.2)
    with torch.inference_mode():
        _, trace = model(inputs, tau=0.7, threshold=0.2)
    expected = [cell.branch_names[int(row.argmax())] for executed, cell in zip(trace.executed, model.cells)
                for row in executed.sum(0)]
    assert list(names) == expected


def test_bad_baseline_configs_are_refused():
    with pytest.raises(ValueError, match="unknown baseline kind"):
        BaselineConfig("mlp")
    with pytest.raises(ValueError, match="needs 6 branch names"):
        StaticCellNet(BaselineConfig("static-cells", base=TINY.model.to_dict(), branches=("identity",)))
    with pytest.raises(ValueError, match="unknown branch"):
        StaticCellNet(BaselineConfig("static-cells", base=TINY.model.to_dict(), branches=("conv_9x9",) * 6))


def test_baseline_trains_the_drnet_way_and_reloads(tmp_path):
    data = write_fake_fashion(tmp_path / "data", train=96, test=40)
    config = BaselineConfig("static-cells", base=TINY.model.to_dict(),
                            branches=("sep_conv_3x3", "avg_pool_3x3", "identity") * 2)
    model = build_baseline(config)
    train_config = TINY.train.__class__(**{**TINY.train.to_dict(), "val_size": 16})
    meta = train(config, train_config, tmp_path / "static.pt", data_dir=str(data), progress=False,
                 select_defaults=False, model=model)
    assert meta["epochs"] == 1 and len(meta["history"]) == 1
    test = meta["test_default"]
    assert test["n"] == 40 and 0.0 <= test["accuracy"] <= 1.0
    assert test["mean_mflops"] == pytest.approx(model.dense_mflops())
    assert test["dense_params"] == sum(p.numel() for p in model.parameters())
    reloaded, reloaded_meta = load_baseline(tmp_path / "static.pt")
    assert reloaded.config == config and reloaded_meta["epochs"] == 1
    x = torch.randn(4, 1, 28, 28)
    with torch.inference_mode():
        # train() moved `model` to the default device (CUDA where present); the reloaded one is on the CPU.
        torch.testing.assert_close(reloaded(x)[0], model.cpu().eval()(x)[0])
    with pytest.raises(CheckpointError, match="not a baseline checkpoint"):
        save_checkpoint(tmp_path / "drnet.pt", tiny_model(), {})
        load_baseline(tmp_path / "drnet.pt")


@pytest.mark.parametrize("path", BUNDLED_BASELINES, ids=lambda path: path.name)
def test_every_bundled_baseline_matches_its_digest_and_recorded_cost(path):
    # docs/PERFORMANCE.md reports these files; a replaced or damaged one must not feed the report.
    assert Path(f"{path}.sha256").read_text().split() == [sha256_of(path), path.name]
    model, meta = load_baseline(path)
    assert model.dense_mflops() == pytest.approx(meta["test_default"]["mean_mflops"])
    assert model.dense_params() == meta["test_default"]["dense_params"]
    assert meta["test_default"]["n"] == 10_000 and meta["test_default"]["accuracy"] > 0.9


def test_a_baseline_that_changed_since_its_digest_is_refused(tmp_path):
    original = BUNDLED_BASELINES[0]
    copy = tmp_path / original.name
    data = bytearray(original.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    Path(f"{copy}.sha256").write_text(Path(f"{original}.sha256").read_text())
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_baseline(copy)
    with pytest.raises(CheckpointError, match="no such baseline checkpoint file"):
        load_baseline(tmp_path / "missing.pt")


def test_baseline_cli_trains_a_plain_cnn(tmp_path):
    data = write_fake_fashion(tmp_path / "data", train=96, test=40)
    done = run_cli("baseline", "--kind", "plain-cnn", "--preset", "tiny", "--target-mflops", "0.3",
                   "--val-size", "16", "--threads", "1", "--no-progress", "--data-dir", str(data),
                   "--output", str(tmp_path / "cnn" / "plain.pt"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["kind"] == "plain-cnn" and report["epochs"] == 1
    assert report["test"]["mean_mflops"] == pytest.approx(0.3, rel=0.3)
    bad = run_cli("baseline", "--kind", "static-cells", "--preset", "tiny", "--branches", "identity",
                  "--data-dir", str(data), "--output", str(tmp_path / "bad.pt"))
    assert bad.returncode == 2 and "needs 6 branch names" in bad.stderr and "Traceback" not in bad.stderr
    no_threads = run_cli("baseline", "--kind", "plain-cnn", "--preset", "tiny", "--threads", "0",
                         "--data-dir", str(data), "--output", str(tmp_path / "bad.pt"))
    assert no_threads.returncode == 2 and "--threads" in no_threads.stderr and "Traceback" not in no_threads.stderr


def test_keep_freed_memory_is_idempotent_and_says_whether_it_applies():
    import platform

    from drnet_core.runtime import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first is True


def test_system_huge_pages_reads_the_bracketed_mode(tmp_path, monkeypatch):
    from drnet_core import runtime

    setting = tmp_path / "enabled"
    monkeypatch.setattr(runtime, "SYSTEM_HUGE_PAGES", setting)
    assert runtime.system_huge_pages() is None  # no such file: a kernel without transparent huge pages
    for line, mode in (("always [madvise] never\n", "madvise"), ("[always] madvise never", "always"),
                       ("always madvise [never]", "never")):
        setting.write_text(line)
        assert runtime.system_huge_pages() == mode


@pytest.mark.parametrize("mode, already, expected", [
    ("madvise", None, "1"), ("always", None, "1"),
    ("never", None, None), (None, None, None),  # the kernel cannot provide them: leave torch as it is
    ("madvise", "0", "0"), ("never", "1", "1"),  # an explicit setting wins
])
def test_use_huge_pages_asks_torch_only_where_the_kernel_can_and_nobody_said_otherwise(monkeypatch, mode, already,
                                                                                        expected):
    from drnet_core import runtime

    monkeypatch.setattr(runtime, "system_huge_pages", lambda: mode)
    if already is None:
        monkeypatch.delenv(runtime.HUGE_PAGES_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(runtime.HUGE_PAGES_VARIABLE, already)
    assert runtime.use_huge_pages() is (expected == "1")
    assert os.environ.get(runtime.HUGE_PAGES_VARIABLE) == expected


def test_time_model_predicts_no_saving_when_every_branch_runs():
    from drnet_core.cli.bench import time_model

    model = tiny_model().eval()
    inputs = torch.randn(8, 1, 28, 28)
    dense = time_model(model, inputs, tau=1.0, threshold=0.0, batch=4, warmup=1, repeats=2)
    assert dense["forwards"] == 2 and dense["batch"] == 4
    assert dense["predicted_routed_ms"] == pytest.approx(dense["predicted_dense_ms"]) and dense["time_ratio"] == pytest.approx(1.0)
    zero_mac_ms = sum(ms * len(cell.connections) for cell, row in zip(model.cells, dense["branch_ms"].values())
                      for name, ms in row.items() if cell.branch_macs[0, cell.branch_names.index(name)] == 0)
    assert dense["zero_mac_branch_share"] == pytest.approx(zero_mac_ms / dense["predicted_dense_ms"])


def test_routed_overrides_apply_to_the_routed_side_only():
    from drnet_core.cli.bench import latency, time_model
    from drnet_core.net.cost import forced_off

    model = tiny_model().eval()
    inputs = torch.randn(8, 1, 28, 28)
    nothing = forced_off(model)
    timing = dict(tau=1.0, threshold=0.0, batch=4, warmup=1, repeats=1, routed_overrides=nothing)
    timed, row = time_model(model, inputs, **timing), latency(model, inputs, **timing)
    # Routed runs no branch at all; dense (threshold 0) still runs every one.
    assert timed["predicted_routed_ms"] == pytest.approx(timed["always_on_ms"]) and timed["zero_mac_branch_share"] == 0
    assert timed["predicted_dense_ms"] > timed["always_on_ms"]
    assert row["routed_mean_mflops"] == pytest.approx(model.always_on_macs / 1e6)
    assert row["dense_mflops"] == pytest.approx(model.dense_mflops())


def test_cell_inputs_for_timing_are_what_each_cell_received():
    from drnet_core.cli.bench import routed_with_cell_inputs

    model = tiny_model().eval()
    batch = torch.randn(6, 1, 28, 28)
    trace, cell_inputs = routed_with_cell_inputs(model, batch, tau=1.0, threshold=0.2)
    assert len(cell_inputs) == len(trace.executed) == len(model.cells)
    with torch.inference_mode():
        first = model.reductions[0](model.stem(batch.contiguous(memory_format=torch.channels_last)))
    torch.testing.assert_close(cell_inputs[0], first)


def test_a_thread_that_evaluates_gets_every_core():
    import os
    import threading

    import torch

    from drnet_core.runtime import use_every_core_in_this_thread

    seen = {}

    def in_thread():
        torch.set_num_threads(1)  # where a thread of Streamlit's starts
        seen["set"] = use_every_core_in_this_thread()
        seen["after"] = torch.get_num_threads()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    expected = int(os.environ.get("OMP_NUM_THREADS") or 0) or len(os.sched_getaffinity(0))
    assert seen == {"set": expected, "after": expected}
