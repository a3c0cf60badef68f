"""RouterNet and weight recalibration (DRNet, Cai et al., arXiv 1905.04849, Sec. 3.2).

A RouterNet is the per-cell hypernetwork: it reads the cell's input and gives every branch of every
connection in the cell one importance logit per instance. Recalibration turns a connection's
logits into weights with a temperature-tau softmax, with Gumbel noise while training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RouterNet(nn.Module):
    def __init__(self, channels: int, num_connections: int, num_branches: int, hidden: int):
        super().__init__()
        self.num_connections = num_connections
        self.num_branches = num_branches
        self.mlp = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_connections * num_branches),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).view(-1, self.num_connections, self.num_branches)  # (B, connections, branches)


def sample_gumbel(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard Gumbel noise from a private, seeded CPU generator.

    `F.gumbel_softmax` draws from the global RNG, which concurrent requests would share and a seed
    could not reproduce across devices; inference noise is therefore drawn here, the same way
    torch draws it (-log of Exp(1)), and moved to the model's device by the caller.
    """
    generator = torch.Generator().manual_seed(int(seed))
    return -torch.empty(shape).exponential_(generator=generator).log()


def recalibrate(
    logits: torch.Tensor, tau: float, *, training: bool, gumbel_noise: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-connection branch weights: softmax((logits + g) / tau) over the branch axis.

    Training always adds fresh Gumbel noise through `F.gumbel_softmax`; at inference the noise is
    off unless the caller passes pre-drawn `gumbel_noise` (see `sample_gumbel`).
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if training:
        return F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1)
    if gumbel_noise is not None:
        logits = logits + gumbel_noise.to(logits.device, logits.dtype)
    return torch.softmax(logits / tau, dim=-1)
