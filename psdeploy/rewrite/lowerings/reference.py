"""``reference``: the released module form, as the checkpoint defines it (the baseline "as released").

Three convolutions per layer (a dense 3x3 whose masked kernels still run, and two grouped
dilated ones, one on the half-swapped input): 1.5x a plain conv's multiply-adds. In a
network nothing is folded, BatchNorms included, so the exported graph is the release's own.
"""

from __future__ import annotations

import torch
from torch import nn

from psdeploy.rewrite.lattice import PSConvLayer
from psdeploy.rewrite.lowerings.base import EmittedConv, LoweredLayer, Lowering, LoweringStats


class BiasAdded(nn.Module):
    """``module(x) + bias`` per channel: a layer checked on its own carries its folded BN shift."""

    def __init__(self, module: nn.Module, bias: torch.Tensor) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("bias", bias.view(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x) + self.bias


class ReferenceLowering(Lowering):
    name = "reference"
    folds_batchnorm = False
    searchable = False  # never faster than a lowering: the baseline, not a candidate

    def lower(self, layer: PSConvLayer, bias: torch.Tensor) -> LoweredLayer:
        s = layer.shape
        released = layer.to_released()
        stats = LoweringStats(
            convs=[EmittedConv((d,), g) for d, g in ((1, s.groups), (2, s.groups * 4), (4, s.groups * 4))],
            macs_per_pixel=s.macs_per_output_pixel() * 3 // 2, shuffles=1, moved_per_pixel=s.in_channels)
        module = BiasAdded(released, bias) if bias.any() else released
        identity = tuple(range(s.parts))
        return LoweredLayer(module, identity, identity, stats)
