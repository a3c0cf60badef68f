"""The training recipe's phases (drnet_core.training.objectives) and the routing pay-off checks (drnet_core.analysis.payoff)."""
from __future__ import annotations

import json

import pytest
import torch

from drnet_core import cli
from drnet_core.training.config import PRESETS, TrainConfig
from drnet_core.analysis.evaluate import RoutedRun, choose_default_setting, run_routed
from drnet_core.training.objectives import cheapest_path, executed_mflops_straight_through, random_path, router_step, supernet_step
from drnet_core.training.phases import enter_training_mode, trainable_parameters
from drnet_core.analysis.payoff import acceptance, cost_against_difficulty, random_routing_run, routing_health

from helpers import tiny_model

IMAGES = torch.randn(16, 1, 28, 28)
LABELS = torch.arange(16) % 10


def test_cheapest_path_runs_only_identity_on_every_connection():
    model = tiny_model()
    _, trace = model(IMAGES, tau=1.0, threshold=0.0, branch_overrides=cheapest_path(model))
    identity = model.cells[0].branch_names.index("identity")
    for executed in trace.executed:
        assert executed[:, :, identity].all()
        assert executed.sum() == executed.shape[0] * executed.shape[1]


def test_random_paths_are_drawn_per_instance_and_honoured_in_training():
    model = tiny_model().train()
    overrides = random_path(model, len(IMAGES), 0.5, torch.Generator().manual_seed(0))
    _, trace = model(IMAGES, tau=1.0, threshold=0.0, branch_overrides=overrides)
    patterns = torch.cat([mask.flatten(1) for mask in trace.executed], dim=1)
    assert len(torch.unique(patterns, dim=0)) > 1  # instances differ
    forced = torch.cat([(o > 0).flatten(1) for o in overrides], dim=1)
    assert not (patterns & ~forced).any()  # nothing outside the drawn path runs


def test_router_phase_trains_only_routers_and_keeps_batch_norm_statistics():
    model = tiny_model()
    config = TrainConfig(phase="routers", target_mflops=0.05, gate_weight=0.5, balance_weight=0.05)
    parameters = trainable_parameters(model, "routers")
    assert parameters and all(p.requires_grad for p in parameters)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {
        name for name, _ in model.named_parameters() if ".router." in name}
    before = {key: value.clone() for key, value in model.state_dict().items()}
    enter_training_mode(model, "routers")
    optimizer = torch.optim.SGD(parameters, lr=0.5)
    result = router_step(model, model, IMAGES, LABELS, tau=1.0, threshold=0.1, config=config)
    optimizer.step()
    assert torch.isfinite(torch.tensor(result.loss))
    changed = {key for key, value in model.state_dict().items() if not torch.equal(value, before[key])}
    assert changed and all(".router." in key for key in changed)


def test_supernet_step_trains_branches_the_router_would_skip():
    model = tiny_model()
    trainable_parameters(model, "supernet")
    enter_training_mode(model, "supernet")
    config = TrainConfig(phase="supernet", random_paths=2)
    result = supernet_step(model, model, IMAGES, LABELS, tau=1.0, threshold=0.5, config=config,
                           generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(torch.tensor(result.loss))
    for cell in model.cells:  # the dense path runs every branch, so every branch parameter has a gradient
        for name, parameter in cell.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_straight_through_cost_has_the_executed_value_and_the_expected_gradient():
    model = tiny_model().train()
    _, trace = model(IMAGES, tau=1.0, threshold=0.2)
    cost = executed_mflops_straight_through(model, trace)
    assert torch.allclose(cost.double(), model.mflops_per_instance(trace), atol=1e-5)
    cost.sum().backward()
    assert any(cell.router.mlp[-1].weight.grad.abs().sum() > 0 for cell in model.cells)


def test_routers_phase_needs_a_budget_and_the_cli_says_so(tmp_path, capsys):
    with pytest.raises(ValueError, match="target_mflops"):
        TrainConfig(phase="routers")
    code = cli.main(["train", "--preset", "tiny", "--phase", "routers", "--output", str(tmp_path / "m.pt")])
    assert code == 2 and "target_mflops" in capsys.readouterr().err


def test_default_setting_within_an_mflops_budget():
    rows = [{"accuracy": a, "mean_mflops": m, "mflops_fraction_of_dense": m / 10, "distinct_paths": 30,
             "mflops_cv": 0.2} for a, m in ((0.90, 2.0), (0.93, 4.0), (0.95, 6.5))]
    assert choose_default_setting(rows, max_mflops=5.0) is rows[1]
    assert choose_default_setting(rows, max_mflops=1.0) is rows[0]  # none affordable: the cheapest


def synthetic_run(mflops, correct, masks) -> RoutedRun:
    labels = torch.zeros(len(mflops), dtype=torch.long)
    predictions = torch.where(torch.tensor(correct), 0, 1)
    return RoutedRun(labels=labels, predictions=predictions, probabilities=torch.zeros(len(mflops), 2),
                     mflops=torch.tensor(mflops, dtype=torch.float64), active_params=torch.zeros(len(mflops)),
                     path_masks=masks, branch_weights=masks.float(), tau=1.0, threshold=0.1, noise_seed=None)


def test_cost_against_difficulty_compares_wrong_with_right_and_deciles():
    mflops = [float(i) for i in range(1, 21)]
    correct = [True] * 18 + [False] * 2  # the two costliest are wrong
    run = synthetic_run(mflops, correct, torch.zeros(20, 4, dtype=torch.bool))
    figures = cost_against_difficulty(run)
    assert figures["misclassified_mflops"] == pytest.approx(19.5)
    assert figures["misclassified_cost_ratio"] == pytest.approx(19.5 / 9.5)
    assert figures["deciles"][0]["error_rate"] == 0 and figures["deciles"][-1]["error_rate"] == 1
    assert figures["costliest_to_cheapest_error_ratio"] == float("inf")


def test_routing_health_flags_a_cell_that_sends_everything_one_way():
    model = tiny_model()
    run = run_routed(model, IMAGES, LABELS, tau=1.0, threshold=0.0)  # dense: one pattern everywhere
    health = routing_health(model, run)
    assert len(health) == len(model.cells)
    assert all(cell["collapsed"] and cell["distinct_patterns"] == 1 and cell["entropy_bits"] == 0 for cell in health)


def test_random_routing_keeps_the_cost_distribution_and_deals_paths_out_anew():
    model = tiny_model()
    images = IMAGES * torch.linspace(0.1, 10, len(IMAGES)).view(-1, 1, 1, 1)  # inputs the router tells apart
    run = max((run_routed(model, images, LABELS, tau=1.0, threshold=threshold) for threshold in (0.1, 0.2, 0.3, 0.4)),
              key=lambda run: len(torch.unique(run.path_masks, dim=0)))
    assert len(torch.unique(run.path_masks, dim=0)) > 1
    control = random_routing_run(model, images, run, seed=1)
    assert torch.allclose(control.mflops.sort().values, run.mflops.sort().values)
    assert not torch.equal(control.path_masks, run.path_masks)
    permuted = torch.sort(control.path_masks.float(), dim=0).values
    assert torch.equal(permuted, torch.sort(run.path_masks.float(), dim=0).values)


def test_acceptance_compares_with_controls_of_similar_or_lower_cost_only():
    health = [{"cell": 1, "distinct_patterns": 9, "largest_pattern_share": 0.4, "collapsed": False}]
    difficulty = {"misclassified_cost_ratio": 1.3, "costliest_to_cheapest_error_ratio": 2.5}
    default = {"name": "drnet", "model": "A", "kind": "drnet", "accuracy": 0.950, "mean_mflops": 5.0}
    rows = [default, {"name": "cheap static", "kind": "static", "accuracy": 0.940, "mean_mflops": 3.0},
            {"name": "costly plain", "kind": "plain", "accuracy": 0.960, "mean_mflops": 9.0},
            {"name": "other drnet's random", "model": "B", "kind": "random", "accuracy": 0.990, "mean_mflops": 1.0}]
    verdict = acceptance(default, rows, {"routing_health": health, "cost_against_difficulty": difficulty})
    assert verdict["passed"], json.dumps(verdict, indent=1)
    rows.append({"name": "close static", "kind": "static", "accuracy": 0.949, "mean_mflops": 5.4})
    verdict = acceptance(default, rows, {"routing_health": health, "cost_against_difficulty": difficulty})
    assert not verdict["passed"] and "close static" in verdict["checks"][2]["check"]


def test_tiny_routers_phase_trains_from_a_supernet_checkpoint(tmp_path, capsys):
    supernet = tmp_path / "supernet.pt"
    assert cli.main(["train", "--preset", "tiny", "--phase", "supernet", "--output", str(supernet),
                     "--skip-test"]) == 0
    capsys.readouterr()
    routed = tmp_path / "routed.pt"
    assert cli.main(["train", "--preset", "tiny", "--phase", "routers", "--init-from", str(supernet),
                     "--target-mflops", "0.05", "--gate-weight", "0.5", "--threshold-warmup-epochs", "0",
                     "--output", str(routed), "--skip-test"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert "at most 0.05 mean MFLOPs" in meta["default_selection"]
    assert PRESETS["tiny"].model.to_dict() == torch.load(routed, weights_only=True)["config"]
