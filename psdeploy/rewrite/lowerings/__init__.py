"""Lowering plug-ins over the canonical PSConv lattice, by name."""

from __future__ import annotations

from psdeploy.errors import PsdeployError
from psdeploy.rewrite.lowerings.base import Lowering, LoweredLayer, LoweringStats
from psdeploy.rewrite.lowerings.fused import FusedLowering
from psdeploy.rewrite.lowerings.grouped import GroupedLowering
from psdeploy.rewrite.lowerings.polyphase import PolyphaseLowering

LOWERINGS: dict[str, type[Lowering]] = {
    "grouped": GroupedLowering,
    "polyphase": PolyphaseLowering,
    "fused": FusedLowering,
}
REFERENCE = "reference"  # the released module form, nothing folded: the baseline "as released"


def get_lowering(name: str) -> Lowering:
    if name not in LOWERINGS:
        known = ", ".join([REFERENCE, *LOWERINGS])
        raise PsdeployError(f"--lowering {name!r}: unknown lowering; expected one of: {known}")
    return LOWERINGS[name]()


__all__ = ["LOWERINGS", "REFERENCE", "Lowering", "LoweredLayer", "LoweringStats", "get_lowering"]
