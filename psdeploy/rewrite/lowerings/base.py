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
    tvm_only: bool = False  # emits an operator only psdeploy's TVM path compiles as such

    def lower(self, layer: PSConvLayer, bias: torch.Tensor) -> LoweredLayer:
        raise NotImplementedError
