"""``fused``: the whole PSConv layer as one operator reading each input block at its rate.

No branches, no channel shuffles, no intermediate tensors: the lattice goes into the
graph as it is (one ``ai.psdeploy::PSConv`` node), and TVM compiles it into a single
computation (``psdeploy.backends.tvm.fused``). Other ONNX runtimes run the node's
function body (one masked conv per rate: exact but 3x the work), so this lowering is
meant for the TVM targets. Kernels a trained checkpoint holds off the design
(PS-ResNeXt as released) are added by one plain dilated conv per affected rate.
"""

from __future__ import annotations

import torch
from torch import nn

from psdeploy.rewrite.lattice import PSConvLayer
from psdeploy.rewrite.lowerings.base import EmittedConv, LoweredLayer, Lowering, LoweringStats
from psdeploy.rewrite.lowerings.fused_op import OP_NAME, rate_masks  # also registers torch.ops.psdeploy.psconv


class FusedPSConv(nn.Module):
    """``psdeploy::psconv`` over the packed lattice weight, plus any off-design remainder convs."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int, parts: int,
                 rates: list[int], remainders: list[nn.Conv2d]) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone(), requires_grad=False)
        self.bias = nn.Parameter(bias.clone(), requires_grad=False)
        self.stride, self.groups, self.parts, self.rates = stride, groups, parts, rates
        self.remainders = nn.ModuleList(remainders)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.psdeploy.psconv(x, self.weight, self.bias, self.stride, self.groups, self.parts, self.rates)
        for conv in self.remainders:
            y = y + conv(x)
        return y


class FusedLowering(Lowering):
    name = "fused"
    custom_ops = frozenset({OP_NAME})

    def lower(self, layer: PSConvLayer, bias: torch.Tensor) -> LoweredLayer:
        s = layer.shape
        rates = [d for row in s.design for d in row]
        weight_shape = tuple(next(iter(layer.weights.values())).shape)
        designed = rate_masks(weight_shape, s.groups, s.parts, rates)
        packed = sum(w * designed[d] for d, w in layer.weights.items())
        stats = LoweringStats(convs=[EmittedConv(tuple(s.dilations), s.groups, "fused")],
                              macs_per_pixel=s.macs_per_output_pixel())
        remainders = []
        for d, blocks in layer.off_design_blocks().items():
            if not blocks:
                continue
            conv = nn.Conv2d(s.in_channels, s.out_channels, 3, s.stride, d, d, s.groups, bias=False)
            with torch.no_grad():
                conv.weight.copy_(layer.weights[d] * (1 - designed[d]))
            remainders.append(conv.eval())
            stats.convs.append(EmittedConv((d,), s.groups, note="off-design kernels"))
            stats.macs_per_pixel += s.macs_per_output_pixel()
            stats.notes.append(f"off-design kernels kept: d{d}: {blocks} blocks")
        module = FusedPSConv(packed, bias, s.stride, s.groups, s.parts, rates, remainders).eval()
        identity = tuple(range(s.parts))
        return LoweredLayer(module, identity, identity, stats)
