"""Pixel attributions with captum: what drives the predicted class, and what drives the routed cost.

The selection of branches (weight >= threshold) has no gradient, so the cost attribution explains a
differentiable stand-in: the router's expected cost, `DRNet.expected_cost_fraction` (expected branch
multiply-adds under the recalibrated weights over the worst case), scaled to MFLOPs of the routed
branches. Both use captum's Integrated Gradients (or plain saliency) against an all-background
baseline. The model is only read: it stays in eval mode, no parameter changes, no global RNG.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import IntegratedGradients, Saliency

from drnet_core.net.model import DRNet

METHODS = ("integrated_gradients", "saliency")


@dataclass
class Attribution:
    pixels: np.ndarray  # (H, W) signed attribution, summed over input channels
    target: str         # what was explained, in words
    method: str
    value: float        # the explained output at the input (probability or MFLOPs)


def _worst_case_branch_mflops(model: DRNet) -> float:
    return sum(float(cell.branch_macs.max(dim=1).values.sum()) for cell in model.cells) / 1e6


def _background_baseline(model_input: torch.Tensor) -> torch.Tensor:
    """The normalised value of a black (0) pixel: Fashion-MNIST's background, not the tensor zero."""
    return torch.full_like(model_input, float(model_input.min()))


def _attribute(forward, model_input: torch.Tensor, method: str, steps: int, target=None) -> np.ndarray:
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {METHODS}")
    x = model_input.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        if method == "integrated_gradients":
            attributions = IntegratedGradients(forward).attribute(
                x, baselines=_background_baseline(model_input), target=target, n_steps=steps,
                internal_batch_size=steps)
        else:
            attributions = Saliency(forward).attribute(x, target=target, abs=False)
    pixels = attributions.detach().sum(dim=1)[0].float().cpu().numpy()
    return np.nan_to_num(pixels, nan=0.0, posinf=0.0, neginf=0.0)


def class_attribution(model: DRNet, model_input: torch.Tensor, target: int, *, tau: float, threshold: float,
                      class_names: tuple[str, ...], method: str = "integrated_gradients",
                      steps: int = 24) -> Attribution:
    """Which pixels raise the probability of class `target` (positive) or lower it (negative)."""
    x = model_input.to(model.device)[:1]

    def probabilities(batch: torch.Tensor) -> torch.Tensor:
        logits, _ = model(batch, tau=tau, threshold=threshold)
        return torch.softmax(logits, dim=1)

    with torch.inference_mode():
        value = float(probabilities(x)[0, target])
    pixels = _attribute(probabilities, x, method, steps, target=target)
    return Attribution(pixels, f"probability of {class_names[target]}", method, value)


def cost_attribution(model: DRNet, model_input: torch.Tensor, *, tau: float, threshold: float,
                     method: str = "integrated_gradients", steps: int = 24) -> Attribution:
    """Which pixels raise (positive) or lower the router's expected branch MFLOPs."""
    x = model_input.to(model.device)[:1]
    scale = _worst_case_branch_mflops(model)

    def expected_mflops(batch: torch.Tensor) -> torch.Tensor:
        _, trace = model(batch, tau=tau, threshold=threshold)
        return model.expected_cost_fraction(trace) * scale

    with torch.inference_mode():
        value = float(expected_mflops(x)[0])
    pixels = _attribute(expected_mflops, x, method, steps)
    return Attribution(pixels, "expected routed MFLOPs (router's differentiable cost)", method, value)


@dataclass
class CostBreakdown:
    """How an input's executed MFLOPs relate to the expected cost the cost attribution explains."""

    always_on: float          # stem, reductions, routers and head: paid by every input
    executed_branches: float  # the branches that ran, each at its full cost whatever its weight
    expected_branches: float  # sum over branches of weight x cost: the differentiable stand-in

    @property
    def executed(self) -> float:
        return self.always_on + self.executed_branches


def cost_breakdown(model: DRNet, executed_mflops: float, expected_branch_mflops: float) -> CostBreakdown:
    """Split an input's executed MFLOPs (`Inspection.mflops`) into always-on and branch parts, beside the
    expected branch MFLOPs (`cost_attribution(...).value`)."""
    always_on = model.always_on_macs / 1e6
    return CostBreakdown(always_on, executed_mflops - always_on, expected_branch_mflops)
