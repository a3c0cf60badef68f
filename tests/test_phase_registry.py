"""The "Add a training phase" checklist, proved: one entry in `phases.PHASES` plus its step function is all
a new phase needs. The `train` command's flags come from `TrainConfig`'s fields and the registries.

A toy phase registered for the test trains only the classifier head with batch norms on their running
statistics; `train` offers it, refuses a config its check refuses, and trains exactly what it says.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from drnet_core import cli

from drnet_core.training import phases
from drnet_core.net.checkpoint import load_checkpoint, save_checkpoint
from drnet_core.training.config import TrainConfig
from drnet_core.training.objectives import StepResult
from drnet_core.training.options import flag_name

from helpers import tiny_model, write_fake_fashion

TOY = "head"
ROOT = Path(__file__).resolve().parent.parent


def head_step(wrapped, model, batch, labels, *, tau, threshold, config, branch_costs=None, generator=None,
              teacher_probs=None):
    logits, trace = wrapped(batch, tau=tau, threshold=threshold)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    cost = float(model.expected_cost_fraction(trace, branch_costs).mean().detach())
    return StepResult(loss.item(), logits.detach(), trace, cost)


def needs_a_parent(config: TrainConfig) -> None:
    if not config.init_from:
        raise ValueError("the head phase needs --init-from: a classifier on untrained features learns nothing")


TOY_PHASE = phases.Phase(head_step, lambda name: name.startswith("head."), "running", needs_a_parent,
                         "only the classifier head, on the network's frozen features")


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(phases.PHASES, TOY, TOY_PHASE)


@pytest.fixture
def parent(tmp_path):
    path = tmp_path / "parent.pt"
    save_checkpoint(path, tiny_model(), {"epochs": 1})
    return path


def train_args(tmp_path, *extra):
    data = write_fake_fashion(tmp_path / "data", train=160, test=20)
    return ["train", "--preset", "tiny", "--val-size", "32", "--data-dir", str(data), "--progress", "off",
            "--skip-test", "--output", str(tmp_path / "toy.pt"), *extra]


def test_toy_phase_is_offered_by_the_cli(toy_registered, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert f"{{joint,supernet,routers,{TOY}}}" in capsys.readouterr().out


def test_toy_phase_check_refuses_its_config_in_one_line(toy_registered, tmp_path, capsys):
    assert cli.main(train_args(tmp_path, "--phase", TOY)) == 2
    assert "the head phase needs --init-from" in capsys.readouterr().err


def test_toy_phase_trains_only_what_its_entry_says(toy_registered, tmp_path, parent, capsys):
    assert cli.main(train_args(tmp_path, "--phase", TOY, "--init-from", str(parent))) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["epochs"] == 1
    before = torch.load(parent, weights_only=True)["state_dict"]
    after = torch.load(tmp_path / "toy.pt", weights_only=True)["state_dict"]
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and all(key.startswith("head.") for key in changed)
    # Running statistics, batch counters included, untouched: the batch norms ran in "running" mode.
    assert not any("running_" in key or "num_batches" in key for key in changed)
    model, loaded = load_checkpoint(tmp_path / "toy.pt")
    assert loaded["train_config"]["phase"] == TOY


def test_unknown_phase_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"phase must be one of \('joint', 'supernet', 'routers'\)"):
        TrainConfig(phase="nope")


@pytest.mark.parametrize("name", list(phases.PHASES))
def test_every_registered_phase_is_complete(name):
    phase = phases.PHASES[name]
    assert callable(phase.step) and callable(phase.trains) and phase.summary
    assert phase.batch_norms in phases.BATCH_NORM_MODES


def test_every_train_config_field_is_a_train_flag_with_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for field in fields(TrainConfig):
        assert flag_name(field.name) in text and field.metadata["help"]


def test_a_flag_parses_with_the_fields_type_and_an_unset_flag_keeps_the_preset():
    args = cli.build_parser().parse_args(["train", "--output", "x.pt", "--limit", "7", "--tau-end", "0.25",
                                          "--no-augment"])
    assert (args.limit, args.tau_end, args.augment, args.lr) == (7, 0.25, False, None)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--output", "x.pt", "--tau-end", "0"])


@pytest.mark.parametrize("first", ["drnet_core.net.model", "drnet_core.training.config", "drnet_core.training.objectives", "drnet_core.training.phases"])
def test_the_registry_imports_whichever_module_comes_first(first):
    # A TrainConfig checks its phase against the registry, and the presets build TrainConfigs on import.
    result = subprocess.run([sys.executable, "-c", f"import {first}; import drnet_core.training.config"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
