"""What the Appendix G tables time: single layers and whole networks, built from the lattice."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from psdeploy.arch.psconv import PSGConv2d, released_init_mask
from psdeploy.arch.seeded import seeded_model
from psdeploy.rewrite.deploy import rewrite
from psdeploy.rewrite.lattice import PSConvLayer
from psdeploy.rewrite.lowerings import get_lowering
from psdeploy.rewrite.search import LoweredReference

# the reference cases of a layer group; the deployed ones are "psconv_<lowering>". plain is the baseline.
LAYER_CASES = ("plain", "dilated2", "dilated4", "psconv_released")


@dataclass(frozen=True)
class LayerSpec:
    channels: int
    size: int
    stride: int
    batch: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.size, self.size)

    @property
    def label(self) -> str:
        return f"{self.channels}@{self.size} s{self.stride} b{self.batch}"


def layer_modules(spec: LayerSpec, lowerings: list[str], seed: int = 0,
                  cases: tuple[str, ...] = LAYER_CASES) -> dict[str, tuple[nn.Module, nn.Module]]:
    """case name -> (module to time, torch reference of the same function), for ``cases`` and each lowering."""
    torch.manual_seed(seed)
    c, s = spec.channels, spec.stride
    wanted = cases
    cases: dict[str, tuple[nn.Module, nn.Module]] = {}
    for name, dilation in (("plain", 1), ("dilated2", 2), ("dilated4", 4)):
        conv = nn.Conv2d(c, c, 3, s, dilation, dilation, bias=False).eval()
        cases[name] = (conv, conv)
    released = PSGConv2d(c, c, 3, s, 1, 2, 1, 4).eval()
    with torch.no_grad():
        released.conv.weight[released_init_mask(released)] = 0.0
    cases["psconv_released"] = (released, released)
    layer = PSConvLayer.from_released("layer", released)
    for lowering in lowerings:
        lowered = get_lowering(lowering).lower(layer, torch.zeros(c))
        cases[f"psconv_{lowering}"] = (lowered.module, LoweredReference(layer, lowered.in_order, lowered.out_order))
    return {name: case for name, case in cases.items() if name in wanted or name.removeprefix("psconv_") in lowerings}


def network_modules(arch: str, plain: str, lowering: str) -> dict[str, tuple[nn.Module, nn.Module]]:
    """plain ResNet deployed, PS-ResNet as released, PS-ResNet deployed (each with its reference)."""
    ps = seeded_model(arch)
    base = seeded_model(plain)
    return {
        f"{plain} deployed": (rewrite(base, "grouped").model, base),
        f"{arch} released": (ps, ps),
        f"{arch} deployed[{lowering}]": (rewrite(ps, lowering).model, ps),
    }
