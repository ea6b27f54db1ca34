"""Infer the architecture from a state dict's keys and shapes."""

from __future__ import annotations

import dataclasses
import re

import torch

from psdeploy.arch.registry import ARCHS, get_config
from psdeploy.arch.resnet import ResNetConfig
from psdeploy.errors import PsdeployError

_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.")


def _signature(sd: dict[str, torch.Tensor], source: str) -> dict[str, object]:
    if "conv1.weight" not in sd or "layer1.0.conv1.weight" not in sd:
        raise PsdeployError(
            f"{source}: not a ResNet-family checkpoint (no 'conv1.weight'/'layer1.0.conv1.weight' keys; "
            f"first keys: {sorted(sd)[:5]})"
        )
    blocks: dict[int, int] = {}
    for key in sd:
        m = _BLOCK.match(key)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    layers = tuple(blocks[s] for s in sorted(blocks))
    psconv = "layer1.0.conv2.gwconv.weight" in sd
    conv2 = sd["layer1.0.conv2.conv.weight" if psconv else "layer1.0.conv2.weight"]
    width = sd["layer1.0.conv1.weight"].shape[0]
    groups = width // conv2.shape[1]
    base_planes = sd["layer1.0.conv3.weight"].shape[0] // 4
    stem = sd["conv1.weight"]
    return {
        "layers": layers,
        "psconv": psconv,
        "groups": groups,
        "width_per_group": width * 64 // (base_planes * groups),
        "stem": "imagenet" if stem.shape[-1] == 7 else "cifar",
        "stem_width": stem.shape[0],
        "base_planes": base_planes,
        "in_chans": stem.shape[1],
        "num_classes": sd["fc.weight"].shape[0] if "fc.weight" in sd else None,
    }


def detect_arch(sd: dict[str, torch.Tensor], source: str, arch: str | None = None) -> ResNetConfig:
    """The registry entry matching ``sd`` (or ``arch`` if given), with its head size."""
    sig = _signature(sd, source)
    if arch is not None:
        return get_config(arch, num_classes=sig["num_classes"])
    fields = ("layers", "psconv", "groups", "width_per_group", "stem", "stem_width", "base_planes", "in_chans")
    for cfg in ARCHS.values():
        if all(getattr(cfg, f) == sig[f] for f in fields):
            return dataclasses.replace(cfg, num_classes=sig["num_classes"])  # type: ignore[arg-type]
    found = ", ".join(f"{f}={sig[f]}" for f in fields)
    raise PsdeployError(f"{source}: no known architecture matches ({found}); pass --arch to choose one")
