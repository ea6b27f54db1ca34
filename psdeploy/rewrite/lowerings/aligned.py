"""``aligned``: ``grouped``'s convs, with every branch writing one common block order.

``grouped`` re-orders the outputs of the branches whose blocks come out in another
order, so their sum needs the re-ordered copy first and no runtime fuses it into a
conv. Here each such branch reads its *input* blocks re-ordered instead (channel
slices and one Concat, kept in blocked layouts), chosen so that it writes the common
order: the branch sum is then Conv + Add chains, which onnxruntime and oneDNN run as
convs accumulating into their output (sum post-op). Same convs, same multiply-adds;
the copies move to the input side, which stride-2 layers pay four times over, so
``--lowering auto`` weighs it per layer against ``sliced``.
"""

from __future__ import annotations

import torch
from torch import nn

from psdeploy.errors import PsdeployError
from psdeploy.rewrite.lattice import PSConvLayer
from psdeploy.rewrite.lowerings.base import (
    EmittedConv,
    LoweredLayer,
    LoweringStats,
    block_index_to_channels,
)
from psdeploy.rewrite.lowerings.grouped import (
    GroupedLowering,
    branch_conv,
    channel_runs,
)
from psdeploy.rewrite.lowerings.plan import BranchPlan


def reads_for_common_order(branch: BranchPlan, sigma: tuple[int, ...]) -> BranchPlan | None:
    """The same branch with its input chunks re-ordered so that chunk c writes sigma's chunk c.

    None when sigma's chunks are not the branch's output sets (then no input order makes it write sigma)."""
    k = len(sigma) // branch.groups_per_card
    wanted = [frozenset(sigma[c * k:(c + 1) * k]) for c in range(branch.groups_per_card)]
    if sorted(map(sorted, wanted)) != sorted(map(sorted, branch.out_sets)):
        return None
    source = [branch.out_sets.index(chunk) for chunk in wanted]
    in_order = tuple(b for j in source for b in branch.in_order[j * k:(j + 1) * k])
    return BranchPlan(branch.dilation, branch.groups_per_card, in_order, tuple(wanted), branch.wasted_blocks)


class AlignedPSConv(nn.Module):
    """sum over input orders of (convs on that order), every conv writing the common output order.

    ``reads[n]`` are the channel runs (start, stop) of x that, concatenated, give input order n;
    empty for x as it comes. The bias rides on the first conv."""

    def __init__(self, paths: list[tuple[list[nn.Conv2d], list[tuple[int, int]]]]) -> None:
        super().__init__()
        self.paths = nn.ModuleList(nn.ModuleList(convs) for convs, _ in paths)
        self.reads = [runs for _, runs in paths]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = None
        for convs, runs in zip(self.paths, self.reads):
            xin = torch.cat([x[:, start:stop] for start, stop in runs], 1) if runs else x
            for conv in convs:
                y = conv(xin) if y is None else y + conv(xin)
        return y  # type: ignore[return-value]


class AlignedLowering(GroupedLowering):
    """``grouped``'s plan; what differs is where each re-order happens."""

    name = "aligned"

    def lower(self, layer: PSConvLayer, bias: torch.Tensor) -> LoweredLayer:
        s = layer.shape
        plan = self.plan(layer)
        pi, sigma = plan.in_order, plan.out_order
        by_reads: dict[tuple[int, ...], list[nn.Conv2d]] = {}
        stats = LoweringStats()
        for branch in plan.branches:
            reading = branch if branch.aligned(sigma) else reads_for_common_order(branch, sigma)
            if reading is None:  # off-design kernels can leave no input order that writes sigma
                raise PsdeployError(f"{layer.name}: the d{branch.dilation} branch cannot write the common "
                                 "block order; use --lowering sliced")
            by_reads.setdefault(reading.in_order, []).append(branch_conv(layer, reading, sigma))
            stats.convs.append(EmittedConv((branch.dilation,), s.groups * branch.groups_per_card))
            stats.macs_per_pixel += s.out_channels * (s.in_channels // (s.groups * branch.groups_per_card)) * 9
        paths: list[tuple[list[nn.Conv2d], list[tuple[int, int]]]] = []
        for order, convs in sorted(by_reads.items(), key=lambda kv: kv[0] != pi):
            runs: list[tuple[int, int]] = []
            if order != pi:
                positions = [pi.index(b) for b in order]
                index = block_index_to_channels(
                    [card * s.parts + p for card in range(s.groups) for p in positions], s.in_block)
                runs = channel_runs(index)
                stats.shuffles += 1
                stats.moved_per_pixel += s.in_channels * s.stride**2
            paths.append((convs, runs))
        first = paths[0][0][0]
        first.bias = nn.Parameter(bias.view(s.groups, s.parts, s.out_block)[:, list(sigma)].reshape(-1).clone(),
                                  requires_grad=False)
        return LoweredLayer(AlignedPSConv(paths).eval(), pi, sigma, stats)
