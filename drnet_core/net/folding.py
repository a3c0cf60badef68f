"""Batch-norm folding: every convolution followed by a batch norm becomes one convolution, for inference.

In eval mode a batch norm is a fixed per-channel affine map, so conv -> BN equals a single conv with
rescaled weights and a bias (`torch.nn.utils.fusion.fuse_conv_bn_eval`): the same outputs up to
float rounding, one pass over the activations fewer per pair. Every branch but identity ends in such
a pair, and so do the stem and the reductions that run for every image. The modules stay where they
were (a `FoldedBatchNorm` stands in each batch norm's place), so hooks and `print(model)` still see them.

Folding is in place and one way: the batch norms' statistics are gone, so a folded network refuses
to train (`FoldableNetwork.train`) and to be saved as a checkpoint (`is_folded`); load the checkpoint
again for either. Cost accounting is unchanged: multiply-adds and parameters are those of the trained
network, recorded when it was built.
"""
from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class FoldedBatchNorm(nn.Identity):
    """Stands where a batch norm was folded into the convolution before it."""


class FoldableNetwork(nn.Module):
    """A network that refuses training mode once its batch norms are folded.

    The check runs before `nn.Module.train` sets any flag, so a refused call leaves the whole
    network in eval mode (a cached model shared by the app's sessions stays usable).
    """

    def train(self, mode: bool = True):
        if mode and is_folded(self):
            raise RuntimeError("this network's batch norms are folded into its convolutions for inference; "
                               "load the checkpoint again to train it")
        return super().train(mode)


def fold_batch_norms(network: nn.Module) -> nn.Module:
    """Fold, in place, every BatchNorm2d that directly follows a Conv2d in an nn.Sequential; returns `network`."""
    if network.training:
        raise ValueError("batch norms fold only in eval mode, where their statistics are fixed")
    for sequence in [module for module in network.modules() if isinstance(module, nn.Sequential)]:
        for index in range(len(sequence) - 1):
            conv, norm = sequence[index], sequence[index + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                # fuse_conv_bn_eval keeps the weight's memory format (channels_last here).
                sequence[index] = fuse_conv_bn_eval(conv, norm)
                sequence[index + 1] = FoldedBatchNorm()
    return network


def is_folded(network: nn.Module) -> bool:
    return any(isinstance(module, FoldedBatchNorm) for module in network.modules())
