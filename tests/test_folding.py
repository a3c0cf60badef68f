"""Folding batch norms into convolutions changes how inference runs, never what it computes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from drnet_core.net.baselines import load_baseline
from drnet_core.net.checkpoint import load_checkpoint, save_checkpoint
from drnet_core.training.config import PRESETS
from drnet_core.data.datasets import ASSETS, load_shipped_subset, to_model_input
from drnet_core.net.folding import fold_batch_norms, is_folded
from drnet_core.net.model import DRNet

from test_executor import _model


def _folded_copy(model: DRNet) -> DRNet:
    folded = DRNet(model.config)
    folded.load_state_dict(model.state_dict())
    return fold_batch_norms(folded.eval())


def _assert_same_routing(plain, folded, x, **settings) -> None:
    (plain_logits, plain_trace), (folded_logits, folded_trace) = plain(x, **settings), folded(x, **settings)
    torch.testing.assert_close(folded_logits, plain_logits, atol=1e-4, rtol=1e-4)
    for plain_executed, folded_executed in zip(plain_trace.executed, folded_trace.executed):
        assert torch.equal(plain_executed, folded_executed)
    torch.testing.assert_close(folded.mflops_per_instance(folded_trace), plain.mflops_per_instance(plain_trace))


@pytest.mark.parametrize("preset_name", ["tiny", "fashion"])
@pytest.mark.parametrize("batch", [1, 12])
def test_folded_network_routes_and_predicts_as_the_plain_one(preset_name: str, batch: int) -> None:
    plain = _model(PRESETS[preset_name].model)
    folded = _folded_copy(plain)
    assert is_folded(folded) and not is_folded(plain)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in folded.modules())
    assert all(conv.weight.is_contiguous(memory_format=torch.channels_last)
               for conv in folded.modules() if isinstance(conv, nn.Conv2d))
    # Cost accounting is the trained network's, not the folded modules'.
    assert folded.dense_params() == plain.dense_params()
    assert folded.dense_mflops() == plain.dense_mflops()
    x = torch.randn(batch, 1, 28, 28)
    with torch.inference_mode():
        for threshold in (0.0, 0.17, 0.4):
            _assert_same_routing(plain, folded, x, tau=1.0, threshold=threshold)


def test_input_gradients_survive_folding() -> None:
    plain = _model(PRESETS["tiny"].model)
    folded = _folded_copy(plain)
    gradients = []
    for network in (plain, folded):
        x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1), requires_grad=True)
        logits, _ = network(x, tau=1.0, threshold=0.17)
        logits[:, 0].sum().backward()
        gradients.append(x.grad)
    torch.testing.assert_close(gradients[1], gradients[0], atol=1e-5, rtol=1e-4)


def test_a_folded_network_refuses_to_train_or_be_saved(tmp_path) -> None:
    folded = _folded_copy(_model(PRESETS["tiny"].model))
    with pytest.raises(RuntimeError, match="folded"):
        folded.train()
    with pytest.raises(ValueError, match="folded"):
        save_checkpoint(tmp_path / "folded.pt", folded, {})
    assert not (tmp_path / "folded.pt").exists()
    assert not folded.training  # the refusal left it as it was
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(DRNet(PRESETS["tiny"].model).train())


def test_shipped_checkpoint_folds_on_request_with_the_same_predictions() -> None:
    plain, _ = load_checkpoint()
    folded, meta = load_checkpoint(fold_batch_norms=True)
    x = to_model_input(load_shipped_subset().images[:64])
    settings = {"tau": meta["default_tau"], "threshold": meta["default_threshold"]}
    with torch.inference_mode():
        _assert_same_routing(plain, folded, x, **settings)
        assert torch.equal(plain(x, **settings)[0].argmax(1), folded(x, **settings)[0].argmax(1))


@pytest.mark.parametrize("name", ["plain_cnn_shipped.pt", "static_cells_shipped.pt"])
def test_bundled_baselines_fold_on_request_with_the_same_outputs(name: str) -> None:
    path = ASSETS / "baselines" / name
    plain, _ = load_baseline(path)
    folded, _ = load_baseline(path, fold_batch_norms=True)
    assert is_folded(folded) and folded.dense_params() == plain.dense_params()
    with pytest.raises(RuntimeError, match="folded"):
        folded.train()
    x = to_model_input(load_shipped_subset().images[:32])
    with torch.inference_mode():
        torch.testing.assert_close(folded(x)[0], plain(x)[0], atol=1e-4, rtol=1e-4)
