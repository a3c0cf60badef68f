"""Data loading and its errors, training and resuming, checkpoints, the command line, the shipped model."""
from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import drnet_core.training.train
from drnet_core import cli
from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint, save_checkpoint, sha256_of
from drnet_core.net.config import ModelConfig
from drnet_core.training.config import PRESETS
from drnet_core.data.datasets import (FASHION_CLASSES, DatasetError, augment, load_fashion_mnist, load_shipped_subset,
                             load_test_set, random_erase, to_model_input)
from drnet_core.analysis.distributed import state_fingerprint
from drnet_core.analysis.evaluate import DEFAULT_SELECTION_RULE, choose_default_setting, run_routed
from drnet_core.net.model import DRNet
from drnet_core.training.train import train
from drnet_core.training.warm_start import branch_subset_state

from helpers import tiny_model, write_fake_fashion, run_cli

ROOT = Path(__file__).resolve().parent.parent


def test_missing_dataset_names_both_ways_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.delenv("DRNET_DATA", raising=False)
    with pytest.raises(DatasetError) as error:
        load_fashion_mnist("test", tmp_path / "nowhere")
    message = str(error.value)
    assert "DRNET_DATA" in message and "--data-dir" in message and "dataset-fashion-mnist" in message


def test_data_dir_comes_from_the_environment(tmp_path, monkeypatch):
    write_fake_fashion(tmp_path)
    monkeypatch.setenv("DRNET_DATA", str(tmp_path))
    assert len(load_fashion_mnist("test")) == 40


@pytest.mark.parametrize("damage", ["truncate", "not_gzip", "bad_magic"])
def test_corrupt_idx_files_give_a_clear_error(tmp_path, damage):
    write_fake_fashion(tmp_path)
    target = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(target.read_bytes())
    if damage == "truncate":
        target.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "not_gzip":
        target.write_bytes(b"hello, not a gzip file")
    else:
        target.write_bytes(gzip.compress(b"\x00\x00\x09\x03" + raw[4:]))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz"):
        load_fashion_mnist("test", tmp_path)


def test_shipped_subset_is_class_balanced_and_named():
    subset = load_shipped_subset()
    assert len(subset) == 2000 and subset.images.shape == (2000, 28, 28) and subset.images.dtype == torch.uint8
    assert torch.bincount(subset.labels, minlength=10).tolist() == [200] * 10
    assert "subset" in subset.name
    assert (ROOT / "assets" / "FASHION_MNIST_LICENSE.txt").read_text().count("Zalando") >= 1


def test_test_set_falls_back_to_the_shipped_subset(tmp_path):
    assert "subset" in load_test_set(tmp_path / "nowhere").name


def test_inputs_are_normalised_and_augmentation_keeps_shape():
    images = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    x = to_model_input(images)
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32
    moved = augment(x, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and not torch.equal(moved, x)
    assert augment(x, torch.Generator().manual_seed(0)).equal(moved)


def test_random_erasing_replaces_one_rectangle_per_chosen_image():
    batch = torch.full((64, 1, 28, 28), 7.0)
    erased = random_erase(batch, 1.0, torch.Generator().manual_seed(0))
    changed = erased != 7.0
    for image in changed[:, 0]:
        rows, cols = image.any(dim=1).nonzero().squeeze(1), image.any(dim=0).nonzero().squeeze(1)
        assert len(rows) and len(cols)
        # One solid rectangle: every pixel inside its bounding box changed, none outside it.
        assert image[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert int(image.sum()) == len(rows) * len(cols) <= 0.33 * 28 * 28 + 28
    assert random_erase(batch, 0.0, torch.Generator().manual_seed(0)).equal(batch)
    some = random_erase(batch, 0.5, torch.Generator().manual_seed(1))
    assert 16 < int((some != 7.0).flatten(1).any(dim=1).sum()) < 48


def tiny_training(tmp_path, epochs=1):
    data = write_fake_fashion(tmp_path / "data", train=96, test=40)
    chosen = PRESETS["tiny"]
    config = replace(chosen.train, epochs=epochs, limit=None, val_size=16, batch_size=16)
    return data, chosen.model, config


def test_training_resumes_and_writes_a_checkpoint_with_metadata(tmp_path):
    data, model_config, train_config = tiny_training(tmp_path, epochs=2)
    output = tmp_path / "model.pt"
    first = train(model_config, replace(train_config, epochs=1), output, data_dir=str(data), progress=False,
                  select_defaults=False)
    assert first["epochs"] == 1
    # A different config must not silently resume someone else's run.
    with pytest.raises(ValueError, match="different config"):
        train(model_config, replace(train_config, epochs=1, lr=0.2), output, data_dir=str(data), progress=False)
    resume = Path(str(output) + ".resume.pt")
    state = torch.load(resume, weights_only=True)
    assert state["epoch"] == 1
    # Same run extended: pick up from the resume file's epoch.
    state["train_config"]["epochs"] = 2
    torch.save(state, resume)
    meta = train(model_config, train_config, output, data_dir=str(data), progress=False)
    assert meta["epochs"] == 2 and len(meta["history"]) == 2
    model, loaded = load_checkpoint(output)
    for key in ("default_tau", "default_threshold", "seed", "torch_version", "test_default", "test_dense", "class_names"):
        assert key in loaded
    assert loaded["test_dense"]["mean_mflops"] == pytest.approx(model.dense_mflops())
    assert (tmp_path / "model.pt.sha256").read_text().split()[0] == sha256_of(output)


class Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_weights_of_one_that_never_stopped(tmp_path, monkeypatch):
    data, model_config, train_config = tiny_training(tmp_path, epochs=3)
    train_config = replace(train_config, phase="supernet", random_erasing=0.5)
    straight = train(model_config, train_config, tmp_path / "straight.pt", data_dir=str(data), progress=False,
                     select_defaults=False, evaluate_test=False)
    write = drnet_core.training.train.write_resume_state

    def write_then_stop(path, **state):
        write(path, **state)
        if state["epoch"] == 1:
            raise Interrupted

    monkeypatch.setattr(drnet_core.training.train, "write_resume_state", write_then_stop)
    with pytest.raises(Interrupted):
        train(model_config, train_config, tmp_path / "resumed.pt", data_dir=str(data), progress=False,
              select_defaults=False, evaluate_test=False)
    monkeypatch.setattr(drnet_core.training.train, "write_resume_state", write)
    train(model_config, train_config, tmp_path / "resumed.pt", data_dir=str(data), progress=False,
          select_defaults=False, evaluate_test=False)
    assert ([round(r["train_loss"], 6) for r in load_checkpoint(tmp_path / "resumed.pt")[1]["history"]]
            == [round(r["train_loss"], 6) for r in straight["history"]])
    assert (state_fingerprint(load_checkpoint(tmp_path / "resumed.pt")[0])
            == state_fingerprint(load_checkpoint(tmp_path / "straight.pt")[0]))


def test_a_teacher_adds_its_distillation_term_and_a_bad_one_is_named(tmp_path):
    data, model_config, train_config = tiny_training(tmp_path, epochs=1)
    teacher = tmp_path / "teacher.pt"
    train(model_config, train_config, teacher, data_dir=str(data), progress=False, evaluate_test=False)
    plain = train(model_config, train_config, tmp_path / "plain.pt", data_dir=str(data), progress=False,
                  select_defaults=False, evaluate_test=False)
    taught = train(model_config, replace(train_config, teacher=str(teacher)), tmp_path / "taught.pt",
                   data_dir=str(data), progress=False, select_defaults=False, evaluate_test=False)
    # Same data, noise and initial weights: only the KL term (>= 0, and > 0 unless the two agree) differs.
    assert taught["history"][0]["train_loss"] > plain["history"][0]["train_loss"]
    result = run_cli("train", "--preset", "tiny", "--teacher", str(tmp_path / "missing.pt"), "--output",
                     str(tmp_path / "x.pt"), "--data-dir", str(data), "--no-progress")
    assert result.returncode != 0 and "missing.pt" in result.stderr and "Traceback" not in result.stderr


def test_init_from_starts_at_the_parent_weights_and_records_it(tmp_path):
    data, model_config, train_config = tiny_training(tmp_path, epochs=1)
    parent = tmp_path / "parent.pt"
    train(model_config, train_config, parent, data_dir=str(data), progress=False, select_defaults=False)
    child_config = replace(train_config, init_from=str(parent), lr=0.0)
    meta = train(model_config, child_config, tmp_path / "child.pt", data_dir=str(data), progress=False,
                 select_defaults=False)
    assert meta["total_epochs"] == 2 and meta["initialized_from"]["sha256"] == sha256_of(parent)
    # With a zero learning rate only batch-norm statistics move: the weights are the parent's.
    (before, _), (after, _) = load_checkpoint(parent), load_checkpoint(tmp_path / "child.pt")
    assert torch.equal(before.stem[0].weight, after.stem[0].weight)
    other = replace(model_config, stem_channels=model_config.stem_channels + 2)
    with pytest.raises(ValueError, match="different architecture"):
        train(other, child_config, tmp_path / "other.pt", data_dir=str(data), progress=False, select_defaults=False)


def test_init_from_with_fewer_branch_types_keeps_each_kept_branch_and_its_router_logits(tmp_path, capsys):
    data, model_config, train_config = tiny_training(tmp_path, epochs=1)
    parent = tmp_path / "parent.pt"
    train(model_config, train_config, parent, data_dir=str(data), progress=False, select_defaults=False)
    kept = ("identity", "sep_conv_3x3")  # a subset, in another order
    ablated = replace(model_config, branches=kept)
    child_path = tmp_path / "child.pt"
    train(ablated, replace(train_config, init_from=str(parent), lr=0.0), child_path, data_dir=str(data),
          progress=False, select_defaults=False)
    (before, _), (after, meta) = load_checkpoint(parent), load_checkpoint(child_path)
    assert after.config.branches == kept and meta["initialized_from"]["branches"] == list(model_config.branches)
    grandchild = train(ablated, replace(train_config, init_from=str(child_path)), tmp_path / "grandchild.pt",
                       data_dir=str(data), progress=False, select_defaults=False, evaluate_test=False)
    assert grandchild["total_epochs"] == 3  # the whole lineage, not only the last run
    old = [model_config.branches.index(name) for name in kept]
    assert torch.equal(after.cells[1].branches[2][1][1].weight, before.cells[1].branches[2][old[1]][1].weight)
    # Before any training step (which moves batch-norm statistics even at lr 0) the first router, whose
    # input the dropped branches cannot change, gives the parent's logits of the kept branches.
    started = DRNet(ablated).eval()
    started.load_state_dict(branch_subset_state(before, kept))
    images = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        _, parent_trace = before(images, tau=1.0, threshold=0.0)
        _, child_trace = started(images, tau=1.0, threshold=0.0)
    assert torch.equal(child_trace.logits[0], parent_trace.logits[0][:, :, old])
    assert not torch.equal(child_trace.logits[1], parent_trace.logits[1][:, :, old])  # cell 0 now sums fewer branches
    # A branch type the parent never had cannot be started from it, in Python or on the command line.
    with pytest.raises(ValueError, match="no dil_conv_3x3 branches"):
        train(replace(ablated, branches=("identity", "dil_conv_3x3")), replace(train_config, init_from=str(child_path)),
              tmp_path / "other.pt", data_dir=str(data), progress=False, select_defaults=False)
    assert cli.main(["train", "--preset", "tiny", "--branches", "identity,dil_conv_3x3", "--init-from", str(child_path),
                     "--output", str(tmp_path / "cli.pt"), "--data-dir", str(data), "--no-progress"]) == 2
    assert "no dil_conv_3x3 branches" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--preset", "tiny", "--branches", "identity,conv_9x9", "--output", str(tmp_path / "x.pt")])
    assert "unknown 'conv_9x9'" in capsys.readouterr().err


def test_select_default_rewrites_the_setting_and_keeps_the_weights(tmp_path, capsys):
    data, model_config, train_config = tiny_training(tmp_path)
    trained = tmp_path / "trained.pt"
    train(model_config, train_config, trained, data_dir=str(data), progress=False, select_defaults=False)
    chosen = tmp_path / "chosen.pt"
    assert cli.main(["select-default", "--checkpoint", str(trained), "--output", str(chosen), "--data-dir", str(data),
                     "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    (before, old), (after, new) = load_checkpoint(trained), load_checkpoint(chosen)
    assert new["default_selection"] == DEFAULT_SELECTION_RULE and new["validation_sweep"]
    assert (new["default_tau"], new["default_threshold"]) == (printed["default_tau"], printed["default_threshold"])
    assert new["history"] == old["history"] and new["test_default"]["threshold"] == new["default_threshold"]
    for name, tensor in before.state_dict().items():
        assert torch.equal(tensor, after.state_dict()[name]), name
    # `sweep --split held-out` reruns the rule's own images: the chosen row comes back as the rule saw it.
    tau, threshold = new["default_tau"], new["default_threshold"]
    out = tmp_path / "held_out.json"
    assert cli.main(["sweep", "--checkpoint", str(chosen), "--split", "held-out", "--data-dir", str(data),
                     "--taus", str(tau), "--thresholds", str(threshold), "--format", "json", "--output", str(out)]) == 0
    [swept] = json.loads(out.read_text())
    [seen] = [row for row in new["validation_sweep"] if (row["tau"], row["threshold"]) == (tau, threshold)]
    assert swept["dataset"] == f"{train_config.val_size:,} training images held out of training"
    assert {key: swept[key] for key in seen} == pytest.approx(seen)


def test_default_setting_is_the_most_accurate_instance_aware_one_within_budget():
    def row(accuracy, fraction, paths, cv):
        return {"accuracy": accuracy, "mflops_fraction_of_dense": fraction, "mean_mflops": 10 * fraction,
                "distinct_paths": paths, "mflops_cv": cv}

    one_path, aware, too_costly = row(0.95, 0.2, 1, 0.0), row(0.93, 0.3, 40, 0.2), row(0.96, 0.5, 80, 0.3)
    assert choose_default_setting([one_path, aware, too_costly]) is aware
    # Nothing instance-aware within budget: the most accurate affordable setting, not nothing.
    assert choose_default_setting([one_path, too_costly]) is one_path
    assert choose_default_setting([too_costly, row(0.9, 0.6, 3, 0.1)]) is too_costly


def test_training_on_learnable_data_beats_chance(tmp_path):
    data = write_fake_fashion(tmp_path / "data", train=320, test=100)
    chosen = PRESETS["tiny"]
    config = replace(chosen.train, epochs=4, limit=None, val_size=20, batch_size=20, augment=False, lr=0.05)
    meta = train(chosen.model, config, tmp_path / "m.pt", data_dir=str(data), progress=False, select_defaults=False)
    assert meta["test_dense"]["accuracy"] > 0.3  # three times chance


def test_checkpoint_round_trip_keeps_outputs(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "m.pt", model, {"default_tau": 0.5, "default_threshold": 0.2})
    loaded, meta = load_checkpoint(path)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x, tau=0.5, threshold=0.2)[0], loaded(x, tau=0.5, threshold=0.2)[0])
    assert meta["default_tau"] == 0.5 and loaded.config == model.config
    assert torch.load(path, weights_only=True)["config"] == ModelConfig.from_dict(model.config.to_dict()).to_dict()


def test_evaluate_json_has_every_field(tmp_path, capsys):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "m.pt", model, {"default_tau": 0.5, "default_threshold": 0.2,
                                                     "class_names": list(FASHION_CLASSES)})
    result = run_cli("evaluate", "--checkpoint", str(path), "--limit", "50", "--json", "--threshold", "0.3")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    for key in ("accuracy", "n", "dataset", "mean_mflops", "dense_mflops", "mean_active_params", "dense_params",
                "distinct_paths", "mflops_cv", "per_class"):
        assert key in summary
    assert summary["n"] == 50 and summary["threshold"] == 0.3
    usage = summary["branch_usage"]
    assert len(usage) == sum(c * b for c, b in model.routing_shape()) and all(0 <= f <= 1 for f in usage.values())
    assert min(usage.values()) < 1  # threshold 0.3 skips something
    assert cli.main(["evaluate", "--checkpoint", str(path), "--limit", "20", "--json", "--threshold", "0"]) == 0
    assert set(json.loads(capsys.readouterr().out)["branch_usage"].values()) == {1.0}  # dense runs everything


def test_sweep_writes_a_csv_grid(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model(), {})
    out = tmp_path / "sweep.csv"
    assert cli.main(["sweep", "--checkpoint", str(path), "--limit", "20", "--taus", "0.5,1",
                     "--thresholds", "0,0.3,1", "--output", str(out)]) == 0
    lines = out.read_text().strip().splitlines()
    assert lines[0].startswith("tau,threshold,accuracy") and len(lines) == 1 + 6
    # No recorded training run: no way to know its held-out images, and the message says so.
    result = run_cli("sweep", "--checkpoint", str(path), "--split", "held-out", "--taus", "1", "--thresholds", "0")
    assert result.returncode == 2 and "held out is unknown" in result.stderr and "Traceback" not in result.stderr


def test_cli_errors_are_one_clear_line(tmp_path):
    result = run_cli("evaluate", "--checkpoint", str(tmp_path / "missing.pt"))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "missing.pt" in result.stderr
    result = run_cli("evaluate", "--threshold", "1.5")
    assert result.returncode == 2 and "threshold must be in [0, 1]" in result.stderr


def test_shipped_checkpoint_classifies_the_shipped_subset():
    model, meta = load_checkpoint(SHIPPED_CHECKPOINT)
    subset = load_shipped_subset()
    run = run_routed(model, to_model_input(subset.images), subset.labels,
                     tau=meta["default_tau"], threshold=meta["default_threshold"])
    assert float(run.correct.float().mean()) > 0.9
    assert float(run.mflops.mean()) < 0.5 * model.dense_mflops()
    assert meta["dataset"] == "fashion-mnist" and meta["total_epochs"] >= 10


def test_time_cost_measures_its_table_once_and_keeps_it_across_a_resume(tmp_path, monkeypatch):
    from drnet_core.training import train as train_module

    data, model_config, train_config = tiny_training(tmp_path, epochs=2)
    train_config = replace(train_config, cost_measure="time", cost_weight=0.5)
    calls = []
    real = train_module.measure_branch_ms
    monkeypatch.setattr(train_module, "measure_branch_ms",
                        lambda cell: calls.append(cell) or real(cell, batch_size=4, repeats=2, warmup=1))
    output = tmp_path / "timed.pt"
    train(model_config, replace(train_config, epochs=1), output, data_dir=str(data), progress=False,
          select_defaults=False, evaluate_test=False)
    measured = torch.load(str(output) + ".resume.pt", weights_only=True)["branch_ms"]
    assert len(calls) == len(measured) == len(model_config.stage_channels) * model_config.cells_per_stage
    state = torch.load(str(output) + ".resume.pt", weights_only=True)
    state["train_config"]["epochs"] = 2
    torch.save(state, str(output) + ".resume.pt")
    meta = train(model_config, train_config, output, data_dir=str(data), progress=False, select_defaults=False,
                 evaluate_test=False)
    assert len(calls) == len(measured)  # resumed: the run keeps charging the table it started with
    assert meta["branch_ms"] == measured and meta["train_config"]["cost_measure"] == "time"
    with pytest.raises(ValueError, match="cost_measure"):
        replace(train_config, cost_measure="seconds")
