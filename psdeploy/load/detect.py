"""Infer the architecture from a state dict's keys and shapes, touching no key before it is known to exist.

Every registered architecture has an expected key -> (shape, dtype) table, got by
building it on the ``meta`` device (no memory, no initialisation) and cached per
(arch, num_classes, in_chans). The head size and the input channels are read
tolerantly from whichever of ``fc.weight`` / ``fc.bias`` / ``conv1.weight`` is
present and well-shaped. The table that matches the most keys (name and shape)
wins; the loader then checks the state dict against it, key by key, before it
builds any real model.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import torch

from psdeploy.arch.registry import ARCHS, get_config
from psdeploy.arch.resnet import ResNet, ResNetConfig
from psdeploy.errors import PsdeployError


@dataclass(frozen=True)
class ExpectedLayout:
    """What a state dict of ``config`` holds: key -> (shape, dtype)."""

    config: ResNetConfig
    keys: Mapping[str, tuple[tuple[int, ...], torch.dtype]]

    def score(self, sd: Mapping[str, torch.Tensor]) -> tuple[int, int]:
        """(keys matching by name and shape, keys matching by name)."""
        by_name = by_shape = 0
        for key, value in sd.items():
            entry = self.keys.get(key)
            if entry is not None:
                by_name += 1
                by_shape += tuple(value.shape) == entry[0]
        return by_shape, by_name


@functools.lru_cache(maxsize=128)
def expected_layout(arch: str, num_classes: int | None, in_chans: int) -> ExpectedLayout:
    """The key table of ``arch`` with this head and stem, from a model built on the meta device."""
    config = dataclasses.replace(get_config(arch, num_classes), in_chans=in_chans)
    with torch.device("meta"):
        model = ResNet(config)
    keys = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    return ExpectedLayout(config, MappingProxyType(keys))


def _dim0(sd: Mapping[str, torch.Tensor], key: str, ndim: int, index: int = 0) -> int | None:
    value = sd.get(key)
    if isinstance(value, torch.Tensor) and value.dim() == ndim and value.shape[index] > 0:
        return int(value.shape[index])
    return None


def _head_candidates(sd: Mapping[str, torch.Tensor], is_backbone: bool, default: int | None) -> list[int | None]:
    """Head sizes worth trying, best guess first; ``None`` for a backbone without ``fc``."""
    if is_backbone or not any(k.startswith("fc.") for k in sd):
        return [None]
    found = [n for n in (_dim0(sd, "fc.weight", 2), _dim0(sd, "fc.bias", 1)) if n is not None]
    found = list(dict.fromkeys(found)) or [default]
    return found


def _stem_candidates(sd: Mapping[str, torch.Tensor], default: int) -> list[int]:
    found = _dim0(sd, "conv1.weight", 4, index=1)
    return list(dict.fromkeys([default] + ([found] if found is not None else [])))


def candidate_layouts(
    sd: Mapping[str, torch.Tensor], arch: str | None = None, is_backbone: bool = False
) -> list[ExpectedLayout]:
    names = [arch] if arch is not None else list(ARCHS)
    out = []
    for name in names:
        base = get_config(name)  # raises the "unknown architecture" error for a bad --arch
        for num_classes in _head_candidates(sd, is_backbone, base.num_classes):
            for in_chans in _stem_candidates(sd, base.in_chans):
                out.append(expected_layout(name, num_classes, in_chans))
    return out


def _rank(layout: ExpectedLayout, sd: Mapping[str, torch.Tensor]) -> tuple:
    """Most keys matching by shape, then by name; ties go to the registry's head and stem."""
    cfg, base = layout.config, ARCHS[layout.config.name]
    by_shape, by_name = layout.score(sd)
    head_from_weight = cfg.num_classes is not None and cfg.num_classes == _dim0(sd, "fc.weight", 2)
    return (by_shape, by_name, cfg.num_classes == base.num_classes, cfg.in_chans == base.in_chans,
            head_from_weight)


def detect_layout(
    sd: Mapping[str, torch.Tensor], source: str, arch: str | None = None, is_backbone: bool = False
) -> ExpectedLayout:
    """The expected layout ``sd`` is checked against: ``arch``'s if given, else the closest registered one.

    Raises ``PsdeployError`` when ``sd`` is no ResNet at all (too few key names of any
    registered architecture) or when ``arch`` is unknown.
    """
    if arch is not None:
        get_config(arch)  # unknown names fail first, with the list of known ones
    if is_backbone and any(k.startswith("fc.") for k in sd):
        raise PsdeployError(f"{source}: detector backbone unexpectedly holds an 'fc' head "
                            f"({', '.join(sorted(k for k in sd if k.startswith('fc.'))[:4])})")
    everything = candidate_layouts(sd, None, is_backbone)
    closest = max(everything, key=lambda layout: _rank(layout, sd))
    _, by_name = closest.score(sd)
    if by_name == 0 or 2 * by_name < min(len(sd), len(closest.keys)):
        raise PsdeployError(
            f"{source}: not a ResNet-family checkpoint (only {by_name} of its {len(sd)} keys are ResNet keys; "
            f"first keys: {sorted(sd)[:5]})"
        )
    if arch is None:
        return closest
    return max(candidate_layouts(sd, arch, is_backbone), key=lambda layout: _rank(layout, sd))

