"""The sparse inference executor computes what the reference executor computes, and nothing more."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from drnet_core.net.sparse_inference import WeightedSum, gather_rows, nhwc
from drnet_core.net.config import ModelConfig
from drnet_core.training.config import PRESETS
from drnet_core.net.model import DRNet

from helpers import randomize_batch_norms

THRESHOLDS = (0.0, 0.1, 0.17, 0.25, 0.4, 0.7, 1.0)


def _model(config: ModelConfig, seed: int = 0) -> DRNet:
    torch.manual_seed(seed)
    model = DRNet(config)
    randomize_batch_norms(model)
    # Larger router logits spread the softmax weights, so thresholds select different subsets.
    for cell in model.cells:
        cell.router.mlp[-1].weight.data.mul_(20)
    return model.eval()


def _both(model: DRNet, x: torch.Tensor, **kwargs):
    return model(x, executor="reference", **kwargs), model(x, executor="sparse", **kwargs)


def _assert_same(reference, sparse) -> None:
    (ref_logits, ref_trace), (sparse_logits, sparse_trace) = reference, sparse
    torch.testing.assert_close(sparse_logits, ref_logits, atol=1e-5, rtol=1e-5)
    for ref_executed, sparse_executed in zip(ref_trace.executed, sparse_trace.executed):
        assert torch.equal(ref_executed, sparse_executed)
    # Later cells see inputs that differ in the last float bits (another summation order).
    for ref_weights, sparse_weights in zip(ref_trace.weights, sparse_trace.weights):
        torch.testing.assert_close(sparse_weights, ref_weights, atol=1e-6, rtol=1e-5)
    assert torch.equal(ref_trace.weights[0], sparse_trace.weights[0])


@pytest.mark.parametrize("preset_name", ["tiny", "fashion"])
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_sparse_executor_matches_reference(preset_name: str, threshold: float) -> None:
    model = _model(PRESETS[preset_name].model)
    x = torch.randn(12, 1, 28, 28)
    with torch.inference_mode():
        reference, sparse = _both(model, x, tau=0.7, threshold=threshold)
    _assert_same(reference, sparse)


def test_thresholds_exercise_partial_batches() -> None:
    """The case worth testing above: a branch that some instances of a batch run and others do not."""
    model = _model(PRESETS["fashion"].model)
    x = torch.randn(12, 1, 28, 28)
    partial = 0
    with torch.inference_mode():
        for threshold in THRESHOLDS:
            _, trace = model(x, tau=0.7, threshold=threshold)
            for executed in trace.executed:
                share = executed.float().mean(dim=0)
                partial += int(((share > 0) & (share < 1)).sum())
    assert partial > 0


def test_sparse_executor_matches_reference_at_batch_one() -> None:
    model = _model(PRESETS["fashion"].model, seed=1)
    with torch.inference_mode():
        for index in range(6):
            x = torch.randn(1, 1, 28, 28)
            for threshold in (0.0, 0.2, 0.5):
                _assert_same(*_both(model, x, tau=1.0, threshold=threshold))


def test_sparse_executor_with_noise_and_overrides() -> None:
    model = _model(PRESETS["fashion"].model, seed=2)
    x = torch.randn(16, 1, 28, 28)
    overrides = [torch.zeros(c, b, dtype=torch.long) for c, b in model.routing_shape()]
    overrides[0][0, 0] = 1    # force a branch on
    overrides[1][2, 1] = -1   # and one off
    overrides[2][:, :] = -1   # a cell with every branch off degrades to the identity
    with torch.inference_mode():
        noise = model.sample_noise(16, seed=5)
        reference, sparse = _both(model, x, tau=0.5, threshold=0.2, gumbel_noise=noise, branch_overrides=overrides)
    _assert_same(reference, sparse)
    assert bool(sparse[1].executed[0][:, 0, 0].all())
    assert not bool(sparse[1].executed[2].any())


def test_sparse_executor_gradients_match_reference() -> None:
    """Attribution methods differentiate an eval-mode model: the in-place accumulation must be exact there too."""
    model = _model(PRESETS["tiny"].model, seed=3)
    x = torch.randn(8, 1, 28, 28)
    grads = []
    for executor in ("reference", "sparse"):
        xi = x.clone().requires_grad_(True)
        logits, _ = model(xi, tau=0.7, threshold=0.2, executor=executor)
        logits[:, 3].sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("threshold", (0.0, 0.15, 0.3, 0.6))
def test_flop_counter_matches_mflops_per_instance(threshold: float) -> None:
    """torch's FlopCounterMode counts 2 per multiply-add: half of it must equal what the trace claims ran."""
    model = _model(PRESETS["fashion"].model, seed=4)
    for seed in range(3):
        x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            _, trace = model(x, tau=0.7, threshold=threshold)
        assert counter.get_total_flops() / 2 / 1e6 == pytest.approx(float(model.mflops_per_instance(trace)[0]), rel=1e-9)


def test_training_always_runs_the_reference_executor() -> None:
    """Training keeps the reference executor (the shipped checkpoint was trained with it)."""
    model = _model(PRESETS["tiny"].model, seed=6).train()
    x = torch.randn(8, 1, 28, 28)
    outputs = []
    for executor in ("reference", "sparse"):
        torch.manual_seed(0)  # the same Gumbel noise for both runs
        outputs.append(model(x, tau=1.0, threshold=0.2, executor=executor)[0])
    assert torch.equal(outputs[0], outputs[1])
    with pytest.raises(ValueError, match="executor"):
        model(x, tau=1.0, threshold=0.2, executor="padded")


def test_row_gather_and_scatter_keep_values_and_channels_last() -> None:
    x = torch.randn(9, 5, 4, 3).contiguous(memory_format=torch.channels_last)
    rows = torch.tensor([0, 4, 5, 8])
    gathered = gather_rows(x, rows)
    assert torch.equal(gathered, x[rows]) and gathered.is_contiguous(memory_format=torch.channels_last)
    node = torch.zeros_like(x)
    nhwc(node).index_add_(0, rows, nhwc(gathered * 2))
    expected = torch.zeros_like(x)
    expected[rows] = x[rows] * 2
    assert torch.equal(node, expected) and node.is_contiguous(memory_format=torch.channels_last)


def _first_cell_input(model: DRNet, batch: int) -> torch.Tensor:
    """What the first cell receives for `batch` random images (call without autograd)."""
    images = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    return model.reductions[0](model.stem(images))


def _identity_alone(model: DRNet) -> torch.Tensor:
    """Branch overrides for the first cell: identity on every connection, every other branch off."""
    overrides = torch.full(model.routing_shape()[0], -1, dtype=torch.int64)
    overrides[:, model.cells[0].branch_names.index("identity")] = 1
    return overrides


def test_in_place_eval_accumulation_leaves_the_cell_input_alone() -> None:
    """The identity branch returns its input: scaling it in place would corrupt the cell's input."""
    model = _model(PRESETS["tiny"].model, seed=4)
    with torch.inference_mode():
        cell_input = _first_cell_input(model, 6)
        kept = cell_input.clone()
        out, *_ = model.cells[0](cell_input, 1.0, 0.5, branch_overrides=_identity_alone(model))
    assert torch.equal(cell_input, kept)
    assert not torch.equal(out, cell_input)


def test_two_batches_at_a_time_give_the_serial_results_and_leave_the_thread_count(monkeypatch):
    from drnet_core.analysis import evaluate

    model = DRNet(PRESETS["tiny"].model).eval()
    inputs, labels = torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,))
    torch.set_num_threads(2)
    assert evaluate.batch_workers(torch.device("cpu"), batches=5) == 2
    assert evaluate.batch_workers(torch.device("cpu"), batches=1) == 1
    parallel = evaluate.run_routed(model, inputs, labels, tau=1.0, threshold=0.2, noise_seed=7, batch_size=8)
    assert torch.get_num_threads() == 2  # the workers' one-thread setting stays in the workers
    monkeypatch.setattr(evaluate, "batch_workers", lambda device, batches: 1)
    serial = evaluate.run_routed(model, inputs, labels, tau=1.0, threshold=0.2, noise_seed=7, batch_size=8)
    for field in ("probabilities", "mflops", "active_params", "path_masks", "branch_weights"):
        assert torch.allclose(getattr(parallel, field).double(), getattr(serial, field).double(), atol=1e-6), field
    assert torch.equal(parallel.path_masks, serial.path_masks)


@pytest.mark.parametrize("grad", [False, True])
def test_a_weighted_sum_adds_up_to_its_terms_and_never_writes_to_them(grad: bool) -> None:
    generator = torch.Generator().manual_seed(0)

    def tensor(batch: int = 6) -> torch.Tensor:
        return torch.randn(batch, 4, 3, 3, generator=generator).contiguous(memory_format=torch.channels_last)

    def each(weights: torch.Tensor) -> torch.Tensor:
        return weights.view(-1, 1, 1, 1)

    x, y, first, second, part = tensor(), tensor(), tensor(), tensor(), tensor(2)
    w = [torch.rand(6, generator=generator) for _ in range(4)]
    rows = torch.tensor([1, 4])
    shared = [x.clone(), y.clone()]
    expected = x * each(1 + w[1]) + y * each(w[0]) + first * each(w[2]) + second * each(w[3])
    expected[rows] += part * each(w[0][rows])
    with torch.set_grad_enabled(grad):
        node = WeightedSum(x, [(x, None)])
        node.add_term(y, w[0])
        node.add_term(x, w[1])  # the same tensor twice: one term
        node.add_output(first.clone(), w[2], x)
        node.add_output(second.clone(), w[3], x)
        node.add_rows(rows, part.clone(), w[0][rows])
        assert len(node.terms) == 2
        scaled = WeightedSum(x)
        scaled.add_scaled(node, w[3])  # an identity from this node
        torch.testing.assert_close(node.rows(rows), expected[rows])
        torch.testing.assert_close(node.total(), expected)
        torch.testing.assert_close(scaled.total(), expected * each(w[3]))
        torch.testing.assert_close(node.rows(rows), expected[rows])  # from the kept sum
        output = WeightedSum(x, [(x, None)])
        output.absorb(scaled)
        torch.testing.assert_close(output.total(), x + expected * each(w[3]))
    assert torch.equal(x, shared[0]) and torch.equal(y, shared[1])


@pytest.mark.parametrize("threshold", [0.0, 0.17, 1.0])
def test_a_forward_without_autograd_matches_one_with_it_and_keeps_the_callers_images(threshold: float) -> None:
    """Without autograd the executor sums in place; it never writes to a tensor it did not create."""
    model = _model(PRESETS["fashion"].model, seed=6)
    images = torch.randn(10, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    kept = images.clone()
    with torch.inference_mode():
        logits, trace = model(images, tau=0.7, threshold=threshold)
    with torch.enable_grad():
        expected, expected_trace = model(images, tau=0.7, threshold=threshold)
    torch.testing.assert_close(logits, expected.detach(), atol=1e-5, rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(trace.executed, expected_trace.executed))
    assert torch.equal(images, kept)


@pytest.mark.parametrize("noise_seed", [None, 3])
def test_a_run_from_prefix_features_equals_a_run_from_the_images(noise_seed) -> None:
    from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
    from drnet_core.data.datasets import load_test_set, to_model_input
    from drnet_core.analysis.evaluate import prefix_features, run_routed

    model, meta = load_checkpoint(SHIPPED_CHECKPOINT, fold_batch_norms=True)
    images = load_test_set().subset(600)
    inputs = to_model_input(images.images)
    features = prefix_features(model, inputs)
    assert features.shape[0] == len(inputs) and features.shape[2] == inputs.shape[2] // 2
    for tau, threshold in ((meta["default_tau"], meta["default_threshold"]), (1.0, 0.05)):
        direct = run_routed(model, inputs, images.labels, tau=tau, threshold=threshold, noise_seed=noise_seed)
        cached = run_routed(model, features, images.labels, tau=tau, threshold=threshold, noise_seed=noise_seed,
                            from_prefix=True)
        assert torch.equal(direct.probabilities, cached.probabilities)
        assert torch.equal(direct.path_masks, cached.path_masks) and torch.equal(direct.mflops, cached.mflops)


@pytest.mark.parametrize("tau, noise_seed", [(0.25, None), (1.0, None), (1.0, 7)])
def test_a_threshold_step_reruns_only_changed_paths_and_matches_a_full_run(tau, noise_seed) -> None:
    from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
    from drnet_core.data.datasets import load_test_set, to_model_input
    from drnet_core.analysis.evaluate import paths_that_change, rerun_at_threshold, run_routed

    model, _ = load_checkpoint(SHIPPED_CHECKPOINT, fold_batch_norms=True)
    images = load_test_set().subset(800)
    inputs = to_model_input(images.images)
    base = run_routed(model, inputs, images.labels, tau=tau, threshold=0.3, noise_seed=noise_seed)
    assert not paths_that_change(base, 0.3).any()
    for threshold in (0.29, 0.31, 0.45, 0.0):
        stepped = rerun_at_threshold(model, inputs, base, threshold)
        full = run_routed(model, inputs, images.labels, tau=tau, threshold=threshold, noise_seed=noise_seed)
        assert stepped.threshold == threshold and stepped.noise_seed == noise_seed
        assert torch.equal(stepped.path_masks, full.path_masks) and torch.equal(stepped.mflops, full.mflops)
        assert torch.equal(stepped.predictions, full.predictions)
        torch.testing.assert_close(stepped.probabilities, full.probabilities, rtol=0, atol=1e-5)
        torch.testing.assert_close(stepped.branch_weights, full.branch_weights, rtol=0, atol=1e-5)
