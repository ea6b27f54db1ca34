"""``grouped``: one grouped dilated conv per rate, permutations folded, minimal shuffles.

On a clean released lattice this is exactly 1.0x the multiply-adds and parameters
of the plain 3x3 conv. Where trained weights hold kernels off the design (PS-ResNeXt
as released) the affected rate keeps the wider grouping it needs: exact, and the
extra cost is reported.
"""

from __future__ import annotations

import torch
from torch import nn

from psdeploy.rewrite.lattice import PSConvLayer
from psdeploy.rewrite.lowerings.base import EmittedConv, LoweredLayer, Lowering, LoweringStats, block_index_to_channels
from psdeploy.rewrite.lowerings.plan import BranchPlan, LayerPlan, plan_layer


def live_union(layer: PSConvLayer) -> dict[int, "object"]:
    """Per rate, blocks live in any cardinal group (a grouped conv is uniform over cards)."""
    return {d: layer.live(d).any(axis=0) | layer.designed(d) for d in layer.weights}


def branch_conv(layer: PSConvLayer, branch: BranchPlan, rows: tuple[int, ...]) -> nn.Conv2d:
    """The grouped conv of one rate, writing output blocks in ``rows`` order per card."""
    s = layer.shape
    g, k = branch.groups_per_card, s.parts // branch.groups_per_card
    conv = nn.Conv2d(
        s.in_channels, s.out_channels, 3, s.stride, branch.dilation, branch.dilation,
        groups=s.groups * g, bias=False,
    )
    weight = torch.zeros_like(conv.weight)
    bo, bi = s.out_block, s.in_block
    for card in range(s.groups):
        for c in range(g):
            ins = branch.in_order[c * k:(c + 1) * k]
            for pos in range(c * k, (c + 1) * k):
                o = rows[pos]
                row0 = (card * s.parts + pos) * bo
                for col, i in enumerate(ins):
                    weight[row0:row0 + bo, col * bi:(col + 1) * bi] = layer.block(branch.dilation, card, o, i)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


def channel_runs(index: torch.Tensor) -> list[tuple[int, int]]:
    """A channel index as its maximal runs of consecutive channels, (start, stop) each."""
    runs: list[tuple[int, int]] = []
    for c in index.tolist():
        if runs and runs[-1][1] == c:
            runs[-1] = (runs[-1][0], c + 1)
        else:
            runs.append((c, c + 1))
    return runs


class GroupedPSConv(nn.Module):
    """sum of grouped dilated convs; branches writing another block order are re-ordered once:
    by one Gather, or (``slices``) by channel slices concatenated, which runtimes keep in blocked layouts."""

    def __init__(self, paths: list[tuple[list[nn.Conv2d], torch.Tensor | None]], bias: torch.Tensor,
                 slices: bool = False) -> None:
        super().__init__()
        self.paths = nn.ModuleList(nn.ModuleList(convs) for convs, _ in paths)
        for n, (_, index) in enumerate(paths):
            self.register_buffer(f"index{n}", index if index is not None else torch.empty(0, dtype=torch.long))
        self.runs = [channel_runs(index) if slices and index is not None else [] for _, index in paths]
        self.bias = nn.Parameter(bias.view(1, -1, 1, 1).clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = None
        for n, convs in enumerate(self.paths):
            z = convs[0](x)
            for conv in convs[1:]:
                z = z + conv(x)
            index = getattr(self, f"index{n}")
            if self.runs[n]:
                z = torch.cat([z[:, start:stop] for start, stop in self.runs[n]], 1)  # Slices + one Concat
            elif index.numel():
                z = z.index_select(1, index)  # one Gather on the channel axis
            y = z if y is None else y + z
        return y + self.bias  # type: ignore[operator]


def gather_index(branch_rows: tuple[int, ...], sigma: tuple[int, ...], groups: int, block: int) -> torch.Tensor:
    """Channel index taking a branch's output (blocks in ``branch_rows``) to ``sigma`` order."""
    parts = len(sigma)
    per_card = [branch_rows.index(b) for b in sigma]
    return block_index_to_channels([card * parts + p for card in range(groups) for p in per_card], block)


class GroupedLowering(Lowering):
    name = "grouped"
    slices = False  # re-order branch outputs by Gather

    def plan(self, layer: PSConvLayer) -> LayerPlan:
        return plan_layer(live_union(layer))

    def lower(self, layer: PSConvLayer, bias: torch.Tensor) -> LoweredLayer:
        s = layer.shape
        plan = self.plan(layer)
        sigma = plan.out_order
        by_order: dict[tuple[int, ...], list[nn.Conv2d]] = {}
        stats = LoweringStats()
        for branch in plan.branches:
            rows = branch.out_order(sigma)
            by_order.setdefault(rows, []).append(branch_conv(layer, branch, rows))
            stats.convs.append(EmittedConv((branch.dilation,), s.groups * branch.groups_per_card))
            stats.macs_per_pixel += s.out_channels * (s.in_channels // (s.groups * branch.groups_per_card)) * 9
        paths: list[tuple[list[nn.Conv2d], torch.Tensor | None]] = []
        for rows, convs in sorted(by_order.items(), key=lambda kv: kv[0] != sigma):
            index = None if rows == sigma else gather_index(rows, sigma, s.groups, s.out_block)
            paths.append((convs, index))
            if index is not None:
                stats.shuffles += 1
                stats.moved_per_pixel += s.out_channels
        off = layer.off_design_blocks()
        if any(off.values()):
            stats.notes.append(
                "off-design kernels kept: " + ", ".join(f"d{d}: {n} blocks" for d, n in off.items() if n)
            )
        bias_sigma = bias.view(s.groups, s.parts, s.out_block)[:, list(sigma)].reshape(-1)
        return LoweredLayer(GroupedPSConv(paths, bias_sigma, self.slices).eval(), plan.in_order, sigma, stats)


class SlicedLowering(GroupedLowering):
    """``sliced``: ``grouped``, with each block re-order done as channel slices and one Concat instead of a
    Gather: both runtimes run Gather only in the plain layout (a layout reorder on each side), while
    Slice/Concat on whole channel blocks can stay blocked. Same convs, same multiply-adds, no Gather."""

    name = "sliced"
    slices = True
