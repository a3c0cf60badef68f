"""Worst-case cost search: how costly can an input be made within an L-infinity budget?

Inputs crafted to drive an adaptive network onto its costliest paths are a known attack (ILFO, Haque et
al., CVPR 2020; sponge examples, Shumailov et al., EuroS&P 2021). Here the attack is projected gradient
ascent in pixel space (pixels in [0, 1] before normalisation, each within `eps` of the original) on a
differentiable stand-in for cost, computed with the routers' own weights (no noise, the checkpoint's
tau and threshold); the figure that counts is then the executed MFLOPs of a real routed run.

Two searches:

* `plain_pgd`: the textbook one, 30 signed-gradient steps on the expected branch cost
  (`DRNet.expected_cost_fraction`: sum of weight x cost), keeping the last step;
* `sponge_search`: what the app and `drnet sponge` report. Executed cost counts every branch whose weight
  reaches the threshold at its full cost, so it ascends a smooth count of those (a sigmoid of each
  weight's margin over the threshold, times the branch's cost) plus the expected cost, from the original
  and from random starts, with a decaying step size, and keeps, per image, the perturbation whose real
  routed run cost most.

Nothing bounds the attack below the dense cost: every branch on every connection running
(`DRNet.dense_mflops`) is the ceiling no input can pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from drnet_core.data.datasets import DEFAULT_DATASET, dataset_named
from drnet_core.analysis.evaluate import run_routed
from drnet_core.net.model import DRNet

PLAIN_STEPS = 30
SPONGE_STEPS = 30          # the plain search's gradient budget: the loss and the kept iterate make the difference
SPONGE_RESTARTS = 1        # the original image, then this many minus one random starts
MARGIN_TEMPERATURE = 0.05  # width of the sigmoid that stands in for "weight >= threshold"
GRADIENT_BATCH = 100


@dataclass
class SpongeResult:
    eps: float
    clean_pixels: torch.Tensor     # (N, 1, H, W) in [0, 1]
    forced_pixels: torch.Tensor    # (N, 1, H, W) in [0, 1], within eps of clean
    clean_mflops: torch.Tensor     # (N,) executed, real routed run
    forced_mflops: torch.Tensor    # (N,)
    clean_correct: torch.Tensor    # (N,) bool
    forced_correct: torch.Tensor   # (N,) bool
    forced_predictions: torch.Tensor
    dense_mflops: float

    def summary(self) -> dict:
        return {"eps": self.eps, "n": len(self.clean_mflops),
                "clean_mean_mflops": float(self.clean_mflops.mean()),
                "clean_max_mflops": float(self.clean_mflops.max()),
                "forced_mean_mflops": float(self.forced_mflops.mean()),
                "forced_max_mflops": float(self.forced_mflops.max()),
                "clean_accuracy": float(self.clean_correct.float().mean()),
                "forced_accuracy": float(self.forced_correct.float().mean()),
                "forced_over_clean": float(self.forced_mflops.mean() / self.clean_mflops.mean()),
                "forced_fraction_of_dense": float(self.forced_mflops.mean()) / self.dense_mflops,
                "dense_mflops": self.dense_mflops}


def normalise(pixels: torch.Tensor, dataset: str = DEFAULT_DATASET) -> torch.Tensor:
    """[0, 1] pixels (N, C, H, W) -> the model's normalised input, differentiably."""
    mean, std = dataset_named(dataset).normalisation
    mean_t = torch.tensor(mean, device=pixels.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=pixels.device).view(1, -1, 1, 1)
    return ((pixels - mean_t) / std_t).contiguous(memory_format=torch.channels_last)


def expected_cost(model: DRNet, pixels: torch.Tensor, *, tau: float, threshold: float) -> torch.Tensor:
    """(N,) the routers' expected branch cost over the worst case, `DRNet.expected_cost_fraction`."""
    _, trace = model(normalise(pixels), tau=tau, threshold=threshold)
    return model.expected_cost_fraction(trace)


def executed_cost_surrogate(model: DRNet, pixels: torch.Tensor, *, tau: float, threshold: float) -> torch.Tensor:
    """(N,) a smooth count of the branches at or over the threshold, each at its cost, over the worst case,
    plus the expected cost (whose gradient stays alive where every margin's sigmoid is flat)."""
    _, trace = model(normalise(pixels), tau=tau, threshold=threshold)
    costs = [cell.branch_macs for cell in model.cells]
    worst = sum(float(cost.sum()) for cost in costs)
    selected = sum((torch.sigmoid((w - threshold) / MARGIN_TEMPERATURE) * c.to(w.device, w.dtype)).sum(dim=(1, 2))
                   for w, c in zip(trace.weights, costs))
    return selected / worst + model.expected_cost_fraction(trace)


def _ascend(objective, clean: torch.Tensor, start: torch.Tensor, eps: float, steps: int, step_size) -> torch.Tensor:
    """Signed-gradient ascent of objective(pixels).sum() from `start`, projected on the eps ball and [0, 1];
    step_size(k) is the step at iteration k. Yields every iterate."""
    pixels = start.clone()
    for step in range(steps):
        pixels.requires_grad_(True)
        with torch.enable_grad():
            gradient, = torch.autograd.grad(objective(pixels).sum(), pixels)
        with torch.no_grad():
            pixels = pixels + step_size(step) * gradient.sign()
            pixels = torch.min(torch.max(pixels, clean - eps), clean + eps).clamp(0.0, 1.0)
        yield pixels.detach()


def _executed_mflops(model: DRNet, pixels: torch.Tensor, labels: torch.Tensor, tau: float, threshold: float):
    run = run_routed(model, normalise(pixels), labels, tau=tau, threshold=threshold)
    return run.mflops, run.predictions.cpu()


def plain_pgd(model: DRNet, clean: torch.Tensor, eps: float, *, tau: float, threshold: float,
              steps: int = PLAIN_STEPS) -> torch.Tensor:
    """Textbook PGD on the expected cost: `steps` steps of 2.5 eps / steps from the original; the last iterate."""
    objective = lambda pixels: expected_cost(model, pixels, tau=tau, threshold=threshold)  # noqa: E731
    pixels = clean
    for pixels in _ascend(objective, clean, clean, eps, steps, lambda _: 2.5 * eps / steps):
        pass
    return pixels


def sponge_batch(model: DRNet, clean: torch.Tensor, labels: torch.Tensor, eps: float, *, tau: float,
                 threshold: float, steps: int = SPONGE_STEPS, restarts: int = SPONGE_RESTARTS,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(forced pixels, their executed MFLOPs): per image the costliest iterate of every restart, by a real run."""
    best_pixels = clean.clone()
    best_mflops, _ = _executed_mflops(model, clean, labels, tau, threshold)
    objective = lambda pixels: executed_cost_surrogate(model, pixels, tau=tau, threshold=threshold)  # noqa: E731
    # Cosine decay from eps / 2: large first steps cross the ball, small last ones settle on a margin.
    step_size = lambda k: eps * (0.05 + 0.45 * (1 + math.cos(math.pi * k / max(steps - 1, 1))) / 2)  # noqa: E731
    for restart in range(restarts):
        start = clean
        if restart > 0:
            noise = torch.rand(clean.shape, generator=generator).to(clean.device) * 2 - 1
            start = (clean + eps * noise).clamp(0.0, 1.0)
        for pixels in _ascend(objective, clean, start, eps, steps, step_size):
            mflops, _ = _executed_mflops(model, pixels, labels, tau, threshold)
            better = mflops > best_mflops
            best_pixels[better.to(best_pixels.device)] = pixels[better.to(pixels.device)]
            best_mflops = torch.where(better, mflops, best_mflops)
    return best_pixels, best_mflops


def _evaluate(model: DRNet, eps: float, clean: torch.Tensor, forced: torch.Tensor, labels: torch.Tensor,
              tau: float, threshold: float) -> SpongeResult:
    clean_run = run_routed(model, normalise(clean), labels, tau=tau, threshold=threshold)
    forced_run = run_routed(model, normalise(forced), labels, tau=tau, threshold=threshold)
    return SpongeResult(eps, clean.cpu(), forced.cpu(), clean_run.mflops, forced_run.mflops, clean_run.correct,
                        forced_run.correct, forced_run.predictions, model.dense_mflops())


def sponge_search(model: DRNet, images: torch.Tensor, labels: torch.Tensor, eps: float, *, tau: float,
                  threshold: float, steps: int = SPONGE_STEPS, restarts: int = SPONGE_RESTARTS, seed: int = 0,
                  method: str = "sponge") -> SpongeResult:
    """images: uint8 (N, H, W). method 'sponge' (`sponge_batch`) or 'plain' (`plain_pgd`)."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1] (pixel units), got {eps}")
    if method not in ("sponge", "plain"):
        raise ValueError(f"method must be 'sponge' or 'plain', got {method!r}")
    clean = (images.float() / 255.0).unsqueeze(1).to(model.device)
    generator = torch.Generator().manual_seed(seed)
    forced = []
    for start in range(0, len(clean), GRADIENT_BATCH):
        batch, batch_labels = clean[start:start + GRADIENT_BATCH], labels[start:start + GRADIENT_BATCH]
        if eps == 0:
            forced.append(batch)
        elif method == "plain":
            forced.append(plain_pgd(model, batch, eps, tau=tau, threshold=threshold))
        else:
            forced.append(sponge_batch(model, batch, batch_labels, eps, tau=tau, threshold=threshold, steps=steps,
                                       restarts=restarts, generator=generator)[0])
    return _evaluate(model, eps, clean, torch.cat(forced), labels, tau, threshold)
