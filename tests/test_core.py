"""Behaviour of the routed network: sparse execution, selection rules, cost, noise, devices."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from drnet_core.net.checkpoint import default_device
from drnet_core.net.cost import module_macs, module_params
from drnet_core.analysis.evaluate import run_routed, summarize
from drnet_core.net.ops import OPS, build_branch
from drnet_core.net.router import recalibrate

from helpers import tiny_model

torch.set_num_threads(1)


def flops_of(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_branch_keeps_shape_and_its_cost_matches_torch(name):
    branch = build_branch(name, 6).eval()
    x = torch.randn(2, 6, 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = branch(x)
        flops = flops_of(lambda: branch(x[:1]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert flops == 2 * module_macs(branch, 9, 9)
    assert module_params(branch) == sum(p.numel() for p in branch.parameters())


@pytest.mark.parametrize("name", sorted(n for n in OPS if module_params(build_branch(n, 4)) > 0))
def test_every_learnable_branch_gets_a_gradient(name):
    branch = build_branch(name, 4).train()
    branch(torch.randn(3, 4, 8, 8)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in branch.parameters())


@torch.no_grad()
def test_a_forward_hook_on_every_convolution_and_linear_layer_of_the_shipped_model_fires():
    """Modules are called as modules, so hooks, `print(model)` and profilers see every layer."""
    from drnet_core.net.checkpoint import load_checkpoint

    for fold in (False, True):
        model, _ = load_checkpoint(fold_batch_norms=fold)
        layers = [module for module in model.modules() if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))]
        fired = set()
        hooks = [layer.register_forward_hook(lambda module, args, output: fired.add(id(module))) for layer in layers]
        try:
            model(torch.randn(2, 1, 28, 28), tau=1.0, threshold=0.0)
        finally:
            for hook in hooks:
                hook.remove()
        assert len(layers) > 100 and fired == {id(layer) for layer in layers}


def test_checkpoints_saved_with_the_earlier_layout_load_with_their_keys_renamed():
    from drnet_core.net.checkpoint import BUNDLED_CHECKPOINTS, read_checkpoint
    from drnet_core.net.model import DRNet, checkpoint_filter_fn

    saved = read_checkpoint(BUNDLED_CHECKPOINTS["Earlier shipped, joint objective"])["state_dict"]
    assert any(".edges." in key for key in saved)  # the file predates `Cell.branches`
    model = DRNet(tiny_model().config)
    earlier = {key.replace(".branches.", ".edges."): value for key, value in tiny_model().state_dict().items()}
    model.load_state_dict(earlier)
    assert checkpoint_filter_fn(earlier).keys() == model.state_dict().keys()
    assert torch.equal(model.cells[0].branches[1][0][1].weight, tiny_model().cells[0].branches[1][0][1].weight)


def test_unknown_branch_name_is_refused_with_the_registered_names():
    with pytest.raises(ValueError, match="sep_conv_3x3"):
        build_branch("conv_7x7", 4)


def dense_reference(model, x, tau):
    """Every branch on every connection, weighted, written out independently of the executor."""
    x = model.stem(x)
    for index, reduce in enumerate(model.reductions):
        x = reduce(x)
        cell = model.cells[index]
        weights = torch.softmax(cell.router(x) / tau, dim=-1)
        nodes = [x]
        for target in range(1, cell.nodes_per_cell + 1):
            total = 0
            for e, (source, t) in enumerate(cell.connections):
                if t == target:
                    for b, branch in enumerate(cell.branches[e]):
                        total = total + branch(nodes[source]) * weights[:, e, b].view(-1, 1, 1, 1)
            nodes.append(total)
        x = sum(nodes)
    return model.head(x)


@torch.no_grad()
def test_threshold_zero_is_the_dense_network():
    model = tiny_model()
    x = torch.randn(5, 1, 28, 28)
    logits, trace = model(x, tau=0.7, threshold=0.0)
    assert torch.allclose(logits, dense_reference(model, x, 0.7), atol=1e-5)
    assert all(mask.all() for mask in trace.executed)
    assert torch.allclose(model.mflops_per_instance(trace), torch.full((5,), model.dense_mflops(), dtype=torch.float64))
    assert torch.allclose(model.active_params_per_instance(trace), torch.full((5,), float(model.dense_params()), dtype=torch.float64))


@torch.no_grad()
@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.6])
def test_a_batch_routes_each_instance_as_if_it_were_alone(threshold):
    model = tiny_model()
    x = torch.randn(6, 1, 28, 28)
    logits, trace = model(x, tau=0.5, threshold=threshold)
    for i in range(6):
        alone, alone_trace = model(x[i:i + 1], tau=0.5, threshold=threshold)
        assert torch.allclose(logits[i:i + 1], alone, atol=1e-5)
        assert torch.equal(trace.path_masks()[i:i + 1], alone_trace.path_masks())


@torch.no_grad()
def test_unselected_branches_are_never_computed():
    model = tiny_model()
    seen_rows: dict[tuple[int, int, int], int] = {}
    hooks = []
    for c, cell in enumerate(model.cells):
        for e, held in enumerate(cell.branches):
            for b, branch in enumerate(held):
                def hook(module, inputs, output, key=(c, e, b)):
                    seen_rows[key] = seen_rows.get(key, 0) + inputs[0].shape[0]
                hooks.append(branch.register_forward_hook(hook))
    x = torch.randn(16, 1, 28, 28)
    _, trace = model(x, tau=0.5, threshold=0.25)
    for handle in hooks:
        handle.remove()
    for c, mask in enumerate(trace.executed):
        for e in range(mask.shape[1]):
            for b in range(mask.shape[2]):
                expected = int(mask[:, e, b].sum())
                if model.cells[c].branch_names[b] == "identity" and expected == len(x):
                    expected = 0  # a whole-batch identity is applied as per-instance weights, not called
                assert seen_rows.get((c, e, b), 0) == expected
    assert not all(mask.all() for mask in trace.executed), "threshold 0.25 should skip something"


@torch.no_grad()
@pytest.mark.parametrize("threshold", [0.0, 0.15, 0.3, 0.5, 1.0])
def test_executed_cost_matches_torch_flop_counter(threshold):
    model = tiny_model()
    for i in range(4):
        x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(i))
        counter = FlopCounterMode(display=False)
        with counter:
            _, trace = model(x, tau=0.5, threshold=threshold)
        assert counter.get_total_flops() == pytest.approx(2e6 * float(model.mflops_per_instance(trace)[0]), abs=0.5)


@torch.no_grad()
def test_a_higher_threshold_never_runs_more_branches():
    model = tiny_model()
    x = torch.randn(32, 1, 28, 28)
    previous = None
    for threshold in torch.linspace(0, 1, 21).tolist():
        _, trace = model(x, tau=0.5, threshold=threshold)
        masks = trace.path_masks()
        if previous is not None:
            assert not (masks & ~previous).any(), f"threshold {threshold} ran a branch a lower one skipped"
        previous = masks
    # The highest threshold is the cheapest path: at most the always-on parts and saturated branches.
    _, trace = model(x, tau=0.5, threshold=1.0)
    assert (model.mflops_per_instance(trace) <= model.mflops_per_instance(model(x, tau=0.5, threshold=0.0)[1])).all()


@torch.no_grad()
def test_a_cell_with_nothing_selected_is_the_identity_and_empty_nodes_feed_nothing():
    model = tiny_model()
    cell = model.cells[0]
    x = torch.randn(3, cell.channels, cell.height, cell.width)
    off = -torch.ones(len(cell.connections), len(cell.branch_names), dtype=torch.long)
    out, _, _, executed = cell(x, 0.5, 0.0, branch_overrides=off)
    assert torch.equal(out, x) and not executed.any()
    # Only node 1 -> node 2 forced on: node 1 is empty, so that connection must be skipped too.
    only_later = off.clone()
    later_edge = cell.connections.index((1, 2))
    only_later[later_edge] = 1
    out, _, _, executed = cell(x, 0.5, 0.0, branch_overrides=only_later)
    assert torch.equal(out, x) and not executed.any()


@torch.no_grad()
def test_overrides_force_single_branches_on_and_off():
    model = tiny_model()
    x = torch.randn(4, 1, 28, 28)
    overrides = [torch.zeros(shape, dtype=torch.long) for shape in model.routing_shape()]
    overrides[0][0, 0] = 1
    overrides[0][0, 1] = -1
    _, trace = model(x, tau=0.5, threshold=0.5, branch_overrides=overrides)
    assert trace.executed[0][:, 0, 0].all() and not trace.executed[0][:, 0, 1].any()


@torch.no_grad()
@pytest.mark.parametrize("tau", [1e-3, 0.05, 1.0, 10.0, 1e3])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_every_tau_and_threshold_gives_finite_results(tau, threshold):
    model = tiny_model()
    logits, trace = model(torch.randn(3, 1, 28, 28), tau=tau, threshold=threshold)
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(w).all() for w in trace.weights)
    assert torch.isfinite(model.mflops_per_instance(trace)).all()


def test_invalid_tau_and_threshold_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="tau"):
        model(torch.randn(1, 1, 28, 28), tau=0.0, threshold=0.1)
    with pytest.raises(ValueError, match="threshold"):
        model(torch.randn(1, 1, 28, 28), tau=1.0, threshold=1.5)


def test_gumbel_noise_is_on_in_training_and_off_at_inference_unless_seeded():
    logits = torch.randn(4, 3, 6)
    torch.manual_seed(0)
    assert not torch.allclose(recalibrate(logits, 0.5, training=True), recalibrate(logits, 0.5, training=True))
    assert torch.equal(recalibrate(logits, 0.5, training=False), recalibrate(logits, 0.5, training=False))
    assert torch.allclose(recalibrate(logits, 0.5, training=False), torch.softmax(logits / 0.5, -1))


def test_seeded_noise_is_reproducible_batch_size_independent_and_seed_dependent():
    model = tiny_model()
    x, labels = torch.randn(12, 1, 28, 28), torch.zeros(12, dtype=torch.long)
    first = run_routed(model, x, labels, tau=0.5, threshold=0.2, noise_seed=7, batch_size=12)
    again = run_routed(model, x, labels, tau=0.5, threshold=0.2, noise_seed=7, batch_size=5)
    other = run_routed(model, x, labels, tau=0.5, threshold=0.2, noise_seed=8, batch_size=12)
    quiet = run_routed(model, x, labels, tau=0.5, threshold=0.2)
    assert torch.allclose(first.branch_weights, again.branch_weights, atol=1e-6)
    assert torch.equal(first.path_masks, again.path_masks)
    assert not torch.allclose(first.branch_weights, other.branch_weights)
    assert not torch.allclose(first.branch_weights, quiet.branch_weights)


def test_summary_reports_paths_cost_spread_and_per_class():
    model = tiny_model()
    x, labels = torch.randn(30, 1, 28, 28), torch.arange(30) % 10
    run = run_routed(model, x, labels, tau=0.5, threshold=0.3)
    summary = summarize(run, model, "random", tuple(str(i) for i in range(10)))
    assert summary["n"] == 30 and 0 <= summary["accuracy"] <= 1
    assert summary["distinct_paths"] == len({tuple(r.tolist()) for r in run.path_masks})
    expected_cv = float(run.mflops.std(unbiased=False) / run.mflops.mean())
    assert summary["mflops_cv"] == pytest.approx(expected_cv)
    assert summary["mean_mflops"] <= summary["dense_mflops"]
    assert set(summary["per_class"]) == {str(i) for i in range(10)}
    patterns, ids = run.path_ids()
    assert torch.equal(patterns[ids], run.path_masks)


def test_device_is_cuda_only_when_available():
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@torch.no_grad()
def test_cuda_matches_cpu():
    model = tiny_model()
    x = torch.randn(8, 1, 28, 28)
    cpu_logits, cpu_trace = model(x, tau=0.5, threshold=0.2)
    gpu = tiny_model().cuda()
    gpu_logits, gpu_trace = gpu(x.cuda(), tau=0.5, threshold=0.2)
    assert torch.allclose(cpu_logits, gpu_logits.cpu(), atol=1e-4)
    assert torch.equal(cpu_trace.path_masks(), gpu_trace.path_masks().cpu())


def test_branch_usage_imbalance_is_zero_for_even_use_and_one_for_a_single_shared_branch():
    from drnet_core.net.model import RoutingTrace

    model = tiny_model()
    shape = model.routing_shape()
    even = [torch.eye(b).repeat(2, 1)[:, None, :].expand(2 * b, c, b) for c, b in shape]
    same = [torch.nn.functional.one_hot(torch.zeros(4, c, dtype=torch.long), b).float() for c, b in shape]
    assert float(model.branch_usage_imbalance(RoutingTrace([], even, []))) == pytest.approx(0.0, abs=1e-6)
    assert float(model.branch_usage_imbalance(RoutingTrace([], same, []))) == pytest.approx(1.0)
    random = [torch.softmax(torch.randn(8, c, b), -1) for c, b in shape]
    assert 0.0 < float(model.branch_usage_imbalance(RoutingTrace([], random, []))) < 1.0


def test_measured_branch_time_is_one_positive_row_per_branch_type_repeated_over_connections():
    from drnet_core.net.cost import measure_branch_ms

    model = tiny_model()
    model.train()
    for cell in model.cells:
        table = measure_branch_ms(cell, batch_size=8, repeats=3, warmup=1)
        assert table.shape == cell.branch_macs.shape
        assert bool((table > 0).all())
        assert torch.equal(table, table[:1].expand_as(table))  # identical operations, identical cost
    assert all(cell.training for cell in model.cells)  # timing in eval mode leaves the mode it found


def test_time_table_measures_the_always_on_part_and_every_branch_per_image():
    from drnet_core.net.cost import measure_time_table

    model = tiny_model()
    model.train()
    inputs = torch.randn(8, 1, 28, 28)
    times = measure_time_table(model, inputs, tau=1.0, repeats=2, warmup=1)
    total = sum(c * b for c, b in model.routing_shape())
    assert times.batch == 8 and times.device == "cpu"
    assert times.branch_ms.shape == (total,) and bool((times.branch_ms > 0).all()) and times.always_on_ms > 0
    assert model.training  # measured in eval mode, handed back as found
    nothing, everything = torch.zeros(2, total, dtype=torch.bool), torch.ones(2, total, dtype=torch.bool)
    assert times.ms_per_instance(nothing).tolist() == [times.always_on_ms] * 2
    assert float(times.ms_per_instance(everything)[0]) == pytest.approx(times.always_on_ms + float(times.branch_ms.sum()))
    one_more = nothing.clone()
    one_more[:, 3] = True
    assert bool((times.ms_per_instance(one_more) > times.ms_per_instance(nothing)).all())


def test_expected_cost_charges_the_table_it_is_given():
    from drnet_core.net.model import RoutingTrace

    model = tiny_model()
    shape = model.routing_shape()
    branches = model.config.branches
    max_pool = branches.index("max_pool_3x3")
    on = [torch.nn.functional.one_hot(torch.full((2, c), max_pool, dtype=torch.long), b).float() for c, b in shape]
    # Under multiply-adds max pooling is free; under a time table that charges it, it is not.
    assert float(model.expected_cost_fraction(RoutingTrace([], on, [])).max()) == 0.0
    times = [torch.arange(1, b + 1, dtype=torch.float64).expand(c, b) for c, b in shape]
    expected = sum(c * (max_pool + 1) for c, _ in shape) / sum(c * b for c, b in shape)
    charged = model.expected_cost_fraction(RoutingTrace([], on, []), times)
    assert torch.allclose(charged, torch.full_like(charged, expected))
