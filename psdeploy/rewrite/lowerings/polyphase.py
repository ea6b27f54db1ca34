"""``polyphase``: every dilated branch becomes a plain (dilation-1) 3x3 conv.

Same branches, channel orders and shuffles as ``grouped``; only how a dilated conv runs
changes, using two exact identities (both checked by the tests):

- stride 2, dilation d, padding d  ==  stride 1, dilation d/2 on ``x[:, :, ::2, ::2]``;
- stride 1, dilation d  ==  a plain 3x3 conv on the d*d polyphase sub-images of x
  (space-to-batch), re-interleaved afterwards (batch-to-space). Sizes that are not a
  multiple of d are zero-padded at the bottom/right, which is exactly the conv's own
  zero padding there, and the result is cropped.

A plain 3x3 conv is what Winograd F(2x2,3x3)/F(4x4,3x3) and most vendor kernels are
fastest at; the price is the space-to-batch data movement, counted in the stats.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from psdeploy.rewrite.lattice import PSConvLayer
from psdeploy.rewrite.lowerings.base import LoweredLayer
from psdeploy.rewrite.lowerings.grouped import GroupedLowering


class PolyphaseConv(nn.Module):
    """A dilated (possibly stride-2) conv computed with dilation-1 convs only."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        d, s = conv.dilation[0], conv.stride[0]
        self.subsample = s == 2
        self.factor = d // 2 if self.subsample else d  # remaining dilation, resolved by space-to-batch
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, 1, conv.groups, bias=conv.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight)
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.subsample:
            x = x[:, :, ::2, ::2]
        f = self.factor
        if f == 1:
            return self.conv(x)
        n, c, h, w = x.shape
        ph, pw = (-h) % f, (-w) % f
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        hs, ws = (h + ph) // f, (w + pw) // f
        x = x.reshape(n, c, hs, f, ws, f).permute(3, 5, 0, 1, 2, 4).reshape(f * f * n, c, hs, ws)
        y = self.conv(x)
        co = y.shape[1]
        y = y.reshape(f, f, n, co, hs, ws).permute(2, 3, 4, 0, 5, 1).reshape(n, co, hs * f, ws * f)
        return y[:, :, :h, :w] if (ph or pw) else y


class PolyphaseLowering(GroupedLowering):
    name = "polyphase"

    def lower(self, layer: PSConvLayer, bias: torch.Tensor) -> LoweredLayer:
        lowered = super().lower(layer, bias)
        module = lowered.module
        for convs in module.paths:
            for i, conv in enumerate(convs):
                if conv.dilation[0] > 1:
                    convs[i] = PolyphaseConv(conv).eval()
        stats = lowered.stats
        dilated = [c for c in stats.convs if c.dilated]
        stats.convs = [replace(c, form="polyphase") if c.dilated else c for c in stats.convs]
        # space-to-batch in and batch-to-space out move input + output once per dilated branch
        stats.moved_per_pixel += len(dilated) * (layer.shape.in_channels * layer.shape.stride**2 + layer.shape.out_channels)
        return lowered
