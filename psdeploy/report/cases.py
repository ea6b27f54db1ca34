"""What the Appendix G tables time, as typed cases: a role (plain, dilated, released, deployed)
and, for deployed ones, the lowering. Labels are for people; code reads the fields."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from psdeploy.arch.psconv import PSGConv2d
from psdeploy.arch.seeded import seeded_model
from psdeploy.export import AUTO
from psdeploy.rewrite.deploy import rewrite
from psdeploy.rewrite.lattice import PSConvLayer
from psdeploy.rewrite.lowerings import LoweredReference, get_lowering


class Role(str, Enum):
    PLAIN = "plain"  # the baseline of its group: plain 3x3 conv, plain ResNet deployed
    DILATED = "dilated"  # a plain 3x3 conv at dilation 2 or 4
    RELEASED = "released"  # PSConv / PS-ResNet in the released module form
    DEPLOYED = "deployed"  # PSConv / PS-ResNet as a lowering emits it


@dataclass(frozen=True)
class Case:
    role: Role
    label: str
    lowering: str | None = None  # DEPLOYED cases: which lowering


@dataclass
class ModuleCase:
    """A case with the module to time and the torch reference it must equal."""

    case: Case
    module: nn.Module
    reference: nn.Module


# the reference cases a layer group may time, by the name report recipes use; plain must come first
LAYER_REFERENCE_CASES = {
    "plain": (Case(Role.PLAIN, "plain"), 1),
    "dilated2": (Case(Role.DILATED, "dilated2"), 2),
    "dilated4": (Case(Role.DILATED, "dilated4"), 4),
    "psconv_released": (Case(Role.RELEASED, "psconv_released"), 0),
}


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


def layer_cases(spec: LayerSpec, lowerings: list[str], seed: int = 0,
                reference_cases: tuple[str, ...] = tuple(LAYER_REFERENCE_CASES)) -> list[ModuleCase]:
    """The chosen reference cases, then one deployed case per lowering, all of the same seeded layer."""
    torch.manual_seed(seed)
    c, s = spec.channels, spec.stride
    released = PSGConv2d(c, c, 3, s, 1, 2, 1, 4).eval()  # masked at init, as released
    out = []
    for name in reference_cases:
        case, dilation = LAYER_REFERENCE_CASES[name]
        module = released if case.role is Role.RELEASED else nn.Conv2d(c, c, 3, s, dilation, dilation, bias=False)
        out.append(ModuleCase(case, module.eval(), module.eval()))
    layer = PSConvLayer.from_released("layer", released)
    for lowering in lowerings:
        lowered = get_lowering(lowering).lower(layer, torch.zeros(c))
        out.append(ModuleCase(Case(Role.DEPLOYED, f"psconv_{lowering}", lowering), lowered.module,
                             LoweredReference(layer, lowered)))
    return out


def network_cases(arch: str, plain: str, lowerings: list[str]) -> list[ModuleCase]:
    """Plain ResNet deployed (the baseline), PS-ResNet as released, PS-ResNet deployed per lowering.
    ``auto``'s module depends on where it runs: the released model stands in until the report's search
    on that backend replaces it (``deployed_auto``)."""
    ps, base = seeded_model(arch), seeded_model(plain)
    return [
        ModuleCase(Case(Role.PLAIN, f"{plain} deployed", "grouped"), rewrite(base, "grouped").model, base),
        ModuleCase(Case(Role.RELEASED, f"{arch} released"), ps, ps),
        *(ModuleCase(Case(Role.DEPLOYED, f"{arch} deployed[{lowering}]", lowering),
                    ps if lowering == AUTO else rewrite(ps, lowering).model, ps) for lowering in lowerings),
    ]
