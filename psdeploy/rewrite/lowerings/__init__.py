"""Lowering plug-ins over the canonical PSConv lattice, by name."""

from __future__ import annotations

from psdeploy.errors import PsdeployError
from psdeploy.rewrite.lowerings.aligned import AlignedLowering
from psdeploy.rewrite.lowerings.base import LoweredLayer, LoweredReference, Lowering, LoweringStats
from psdeploy.rewrite.lowerings.fused import FusedLowering
from psdeploy.rewrite.lowerings.grouped import GroupedLowering, SlicedLowering
from psdeploy.rewrite.lowerings.polyphase import PolyphaseLowering
from psdeploy.rewrite.lowerings.reference import ReferenceLowering

LOWERINGS: dict[str, type[Lowering]] = {
    lowering.name: lowering
    for lowering in (ReferenceLowering, GroupedLowering, SlicedLowering, AlignedLowering, PolyphaseLowering, FusedLowering)
}


def get_lowering(name: str) -> Lowering:
    if name not in LOWERINGS:
        raise PsdeployError(f"--lowering {name!r}: unknown lowering; expected one of: {', '.join(LOWERINGS)}")
    return LOWERINGS[name]()


__all__ = ["LOWERINGS", "Lowering", "LoweredLayer", "LoweredReference", "LoweringStats", "get_lowering"]
