"""Checkpoint -> eval-mode ``ResNet`` whose state matches the file exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from psdeploy.arch.registry import build
from psdeploy.arch.resnet import ResNet, ResNetConfig
from psdeploy.errors import PsdeployError
from psdeploy.load.checkpoint import read_checkpoint, sha256_of
from psdeploy.load.detect import detect_arch
from psdeploy.load.keys import filter_keys, unwrap

_LISTED = 8


@dataclass
class LoadedModel:
    model: ResNet
    config: ResNetConfig
    source: str
    sha256: str
    notes: list[str] = field(default_factory=list)

    @property
    def arch(self) -> str:
        return self.config.name


def _check_keys(model: ResNet, sd: dict[str, torch.Tensor], source: str, arch: str) -> dict[str, torch.Tensor]:
    expected = model.state_dict()
    # Old checkpoints lack BN's step counter; it does not affect inference.
    sd = {**{k: v for k, v in expected.items() if k.endswith("num_batches_tracked")}, **sd}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    misshaped = sorted(
        f"{k} {tuple(sd[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in set(sd) & set(expected)
        if sd[k].shape != expected[k].shape
    )
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            more = f" ... (+{len(items) - _LISTED} more)" if len(items) > _LISTED else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:_LISTED])}{more}")
    if problems:
        raise PsdeployError(f"{source}: does not fit {arch}: " + "; ".join(problems))
    return sd


def model_from_state_dict(
    sd: dict[str, torch.Tensor], source: str, arch: str | None = None, is_backbone: bool = False
) -> tuple[ResNet, ResNetConfig]:
    config = detect_arch(sd, source, arch)
    if is_backbone and config.num_classes is not None:
        raise PsdeployError(f"{source}: detector backbone unexpectedly holds an 'fc' head")
    model = build(config)
    sd = _check_keys(model, sd, source, config.name)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return model.eval(), config


SEEDED_PREFIX = "seeded:"


def load_seeded(spec: str) -> LoadedModel:
    """``seeded:ARCH[@SEED]``: a synthetic released-like model (random weights, real structure)."""
    from psdeploy.arch.seeded import seeded_model

    body = spec.removeprefix(SEEDED_PREFIX)
    arch, _, seed_text = body.partition("@")
    if seed_text and not seed_text.isdigit():
        raise PsdeployError(f"{spec}: expected seeded:ARCH or seeded:ARCH@SEED with an integer seed")
    seed = int(seed_text or 0)
    model = seeded_model(arch, seed)
    return LoadedModel(model, model.cfg, spec, f"seeded-{arch}-{seed}", [f"synthetic weights, seed {seed}"])


def load_model(path: str | Path, arch: str | None = None) -> LoadedModel:
    """Load a PS-ResNet/ResNet checkpoint as users have them; raise ``PsdeployError`` if it does not fit.

    ``seeded:ARCH[@SEED]`` instead builds seeded random weights with the release's structure.
    """
    source = str(path)
    if source.startswith(SEEDED_PREFIX):
        return load_seeded(source)
    obj = read_checkpoint(path)
    raw, notes = unwrap(obj, source)
    filtered = filter_keys(raw, source)
    model, config = model_from_state_dict(filtered.state_dict, source, arch, filtered.is_detector_backbone)
    return LoadedModel(model, config, source, sha256_of(Path(path)), notes + filtered.notes)
