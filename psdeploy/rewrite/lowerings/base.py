"""What a lowering is: a PSConv layer (canonical lattice) -> standard ops computing the same."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from psdeploy.rewrite.lattice import PSConvLayer


def block_index_to_channels(block_index: list[int], block: int) -> torch.Tensor:
    """Channel-level gather index for a block-level one (``out block k = in block block_index[k]``)."""
    return torch.tensor([b * block + r for b in block_index for r in range(block)], dtype=torch.long)


@dataclass
class LoweringStats:
    """What a lowering emitted for one layer, for inspect and the report."""

    convs: list[str] = field(default_factory=list)  # e.g. "3x3 d2 g4"
    macs_per_pixel: int = 0  # conv multiply-adds per output pixel
    shuffles: int = 0  # channel-block gathers
    moved_per_pixel: int = 0  # elements moved by those gathers per output pixel
    notes: list[str] = field(default_factory=list)


@dataclass
class LoweredLayer:
    """A drop-in for ``bn2(conv2(x))`` given x in ``in_order`` blocks; output in ``out_order`` blocks."""

    module: nn.Module
    in_order: tuple[int, ...]
    out_order: tuple[int, ...]
    stats: LoweringStats


class Lowering:
    """Base class of the lowering plug-ins; ``name`` is what ``--lowering`` takes."""

    name: str = ""
    custom_ops: frozenset[str] = frozenset()  # non-standard ONNX ops it emits ("domain::type")
    folds_batchnorm: bool = True  # False: the network keeps its BatchNorms (the released form)
    searchable: bool = True  # a candidate of ``--lowering auto``

    def lower(self, layer: PSConvLayer, bias: torch.Tensor) -> LoweredLayer:
        raise NotImplementedError


class LoweredReference(nn.Module):
    """The lattice's function in a lowered form's channel orders: what that lowering must equal.

    In a network these orders fold into the neighbouring convs; a layer checked on its own
    needs them explicit."""

    def __init__(self, layer: PSConvLayer, lowered: LoweredLayer) -> None:
        super().__init__()
        from psdeploy.rewrite.fold import block_order_to_channels

        s = layer.shape
        self.layer = layer
        self.perm_in = torch.argsort(block_order_to_channels(list(lowered.in_order), s.groups, s.in_block))
        self.perm_out = block_order_to_channels(list(lowered.out_order), s.groups, s.out_block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.forward(x[:, self.perm_in])[:, self.perm_out]
