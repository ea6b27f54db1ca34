"""What a lowering is: a PSConv layer (canonical lattice) -> standard ops computing the same."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from psdeploy.rewrite.lattice import PSConvLayer


def block_index_to_channels(block_index: list[int], block: int) -> torch.Tensor:
    """Channel-level gather index for a block-level one (``out block k = in block block_index[k]``)."""
    return torch.tensor([b * block + r for b in block_index for r in range(block)], dtype=torch.long)


@dataclass(frozen=True)
class EmittedConv:
    """One 3x3 conv a lowering emitted: its dilation(s) and groups, and how it runs."""

    dilations: tuple[int, ...]  # several: one fused kernel reading each block at its own rate
    groups: int
    form: str = ""  # "polyphase": space-to-batch around a dense conv; "fused": one psconv kernel
    note: str = ""

    @property
    def dilated(self) -> bool:
        return max(self.dilations) > 1

    def __str__(self) -> str:  # e.g. "3x3 d2 g4", "3x3 polyphase-d2 g4", "3x3 fused d1/2/4 g1"
        rates = "/".join(map(str, self.dilations))
        kind = {"polyphase": f"polyphase-d{rates}", "fused": f"fused d{rates}"}.get(self.form, f"d{rates}")
        return f"3x3 {kind} g{self.groups}" + (f" ({self.note})" if self.note else "")


@dataclass
class LoweringStats:
    """What a lowering emitted for one layer, for inspect and the report."""

    convs: list[EmittedConv] = field(default_factory=list)
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
