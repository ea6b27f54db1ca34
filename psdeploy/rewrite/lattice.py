"""The canonical description of one PSConv layer: the hub every lowering reads.

A PSConv layer is a 3x3 convolution whose kernel blocks carry different dilation
rates. Cut the channels of each of ``groups`` cardinal groups into ``parts``
blocks; block (o, i) of card j is the kernel that output block o reads from input
block i. ``weights[d]`` holds, in the layout of a ``groups``-grouped dense conv
``(C_out, C_in/groups, 3, 3)``, every kernel applied at dilation ``d`` and zeros
elsewhere. The layer computes

    y = sum_d conv2d(x, weights[d], stride, padding=d, dilation=d, groups)

which is exactly what the released module computes (the shift branch's half
swap is folded into where its kernels sit). ``design`` gives the rate the paper
assigns each block; ``live(d)`` says which blocks really hold non-zero kernels at
rate ``d`` in these weights, so trained checkpoints whose "masked" kernels are not
zero (PS-ResNeXt as released) are described faithfully.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from psdeploy.arch.psconv import PSGConv2d


@dataclass(frozen=True)
class LatticeShape:
    """Channel/stride geometry and the designed (out part, in part) -> dilation table."""

    in_channels: int
    out_channels: int
    groups: int
    parts: int
    stride: int
    design: tuple[tuple[int, ...], ...]  # design[o][i], the same in every cardinal group
    kernel_size: int = 3

    @property
    def in_block(self) -> int:
        return self.in_channels // (self.groups * self.parts)

    @property
    def out_block(self) -> int:
        return self.out_channels // (self.groups * self.parts)

    @property
    def dilations(self) -> tuple[int, ...]:
        return tuple(sorted({d for row in self.design for d in row}))

    def macs_per_output_pixel(self) -> int:
        """Multiply-adds of the plain conv of this shape: the 1.0x target."""
        return self.out_channels * (self.in_channels // self.groups) * self.kernel_size**2


def released_design(parts: int, dilation: int) -> tuple[tuple[int, ...], ...]:
    """Released layout: block i at ``dilation``, block i+parts/2 at 2*dilation, the rest at 1."""
    return tuple(
        tuple(dilation if i == o else 2 * dilation if i == (o + parts // 2) % parts else 1 for i in range(parts))
        for o in range(parts)
    )


@dataclass
class PSConvLayer:
    """One PSConv layer: lattice geometry + the weights at each dilation rate."""

    name: str
    shape: LatticeShape
    weights: dict[int, torch.Tensor]

    # ----------------------------------------------------------- construction
    @classmethod
    def from_released(cls, name: str, module: PSGConv2d) -> PSConvLayer:
        g, p = module.groups, module.parts
        gw, sh, dense = module.gwconv.weight.detach(), module.gwconv_shift.weight.detach(), module.conv.weight.detach()
        c_out, c_in_card = dense.shape[0], dense.shape[1]
        shape = LatticeShape(
            in_channels=c_in_card * g, out_channels=c_out, groups=g, parts=p, stride=module.stride,
            design=released_design(p, module.dilation),
        )
        bo, bi = shape.out_block, shape.in_block
        w_lo = torch.zeros_like(dense)
        w_hi = torch.zeros_like(dense)
        for j in range(g):
            for o in range(p):
                rows = slice((j * p + o) * bo, (j * p + o + 1) * bo)
                w_lo[rows, o * bi:(o + 1) * bi] = gw[rows]
                shifted = (o + p // 2) % p  # the shift branch reads the half-swapped input
                w_hi[rows, shifted * bi:(shifted + 1) * bi] = sh[rows]
        weights = {1: dense.clone(), module.dilation: w_lo, 2 * module.dilation: w_hi}
        return cls(name, shape, weights)

    def to_released(self) -> PSGConv2d:
        """Rebuild the released module form (the 'reference' lowering, and a round-trip check)."""
        s = self.shape
        lo, hi = sorted(d for d in self.weights if d != 1)
        module = PSGConv2d(s.in_channels, s.out_channels, 3, s.stride, 1, lo, s.groups, s.parts)
        g, p, bo, bi = s.groups, s.parts, s.out_block, s.in_block
        with torch.no_grad():
            module.conv.weight.copy_(self.weights[1])
            for j in range(g):
                for o in range(p):
                    rows = slice((j * p + o) * bo, (j * p + o + 1) * bo)
                    shifted = (o + p // 2) % p
                    module.gwconv.weight[rows] = self.weights[lo][rows, o * bi:(o + 1) * bi]
                    module.gwconv_shift.weight[rows] = self.weights[hi][rows, shifted * bi:(shifted + 1) * bi]
        return module.eval()

    # ---------------------------------------------------------------- queries
    def block(self, d: int, card: int, o: int, i: int) -> torch.Tensor:
        s = self.shape
        rows = slice((card * s.parts + o) * s.out_block, (card * s.parts + o + 1) * s.out_block)
        return self.weights[d][rows, i * s.in_block:(i + 1) * s.in_block]

    def live(self, d: int) -> np.ndarray:
        """Boolean (groups, parts, parts): block (o, i) of card j holds a non-zero kernel at rate d."""
        s = self.shape
        w = self.weights[d].reshape(s.groups, s.parts, s.out_block, s.parts, s.in_block, -1)
        return (w != 0).any(dim=(2, 4, 5)).numpy()

    def designed(self, d: int) -> np.ndarray:
        """Boolean (parts, parts): the blocks the paper's lattice gives rate d."""
        return np.array(self.shape.design) == d

    def off_design_blocks(self) -> dict[int, int]:
        """Per rate, how many (card, o, i) blocks hold non-zero kernels the design does not give that rate."""
        return {d: int((self.live(d) & ~self.designed(d)[None]).sum()) for d in self.weights}

    @property
    def is_clean(self) -> bool:
        """True when every kernel sits where the design puts it: the 1.0x form is exact."""
        return not any(self.off_design_blocks().values())

    # ------------------------------------------------------------- function
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's function, straight from the lattice (used to check lowerings)."""
        s = self.shape
        return sum(
            F.conv2d(x, w, None, s.stride, d, d, s.groups) for d, w in sorted(self.weights.items())
        )  # type: ignore[return-value]

    def scaled(self, scale: torch.Tensor) -> PSConvLayer:
        """The same layer with output channel c multiplied by ``scale[c]`` (BN folding)."""
        return PSConvLayer(self.name, self.shape, {d: w * scale.view(-1, 1, 1, 1) for d, w in self.weights.items()})
