"""Checkpoint -> eval-mode ``ResNet`` whose state matches the file exactly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from psdeploy.arch.registry import build
from psdeploy.arch.resnet import ResNet, ResNetConfig
from psdeploy.errors import PsdeployError
from psdeploy.load.checkpoint import read_checkpoint, sha256_of
from psdeploy.load.detect import ExpectedLayout, detect_layout
from psdeploy.load.keys import filter_keys, unwrap
from psdeploy.sources import SEEDED_PREFIX

_LISTED = 8


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint as loaded: the module, its architecture, where it came from (path and content hash, which
    artifacts record and ``verify`` checks) and what loading had to do to it."""

    model: ResNet
    config: ResNetConfig
    source: str
    sha256: str
    notes: tuple[str, ...] = ()  # keys filtered or converted, or "synthetic weights"

    @property
    def arch(self) -> str:
        return self.config.name


def _listed(label: str, items: list[str]) -> str:
    more = f" ... (+{len(items) - _LISTED} more)" if len(items) > _LISTED else ""
    return f"{len(items)} {label}: {', '.join(items[:_LISTED])}{more}"


def _is_integer(dtype: torch.dtype) -> bool:
    if dtype == torch.bool:
        return False
    try:
        torch.iinfo(dtype)
    except (TypeError, NotImplementedError, RuntimeError):
        return False
    return True


def _is_step_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _dtype_problem(key: str, value: torch.Tensor) -> str | None:
    if value.layout != torch.strided:
        return f"{key} {str(value.layout).removeprefix('torch.')} (expected a dense tensor)"
    if _is_step_counter(key):  # BN's step counter: unused at inference, any number type will do
        if value.dtype.is_floating_point or _is_integer(value.dtype):
            return None
        return f"{key} {str(value.dtype).removeprefix('torch.')} (expected an integer or float dtype)"
    if value.dtype.is_floating_point:
        return None
    return f"{key} {str(value.dtype).removeprefix('torch.')} (expected a floating-point dtype, float32)"


def _non_finite(key: str, value: torch.Tensor) -> str | None:
    if value.layout != torch.strided or not value.dtype.is_floating_point:
        return None
    loaded = value.to(torch.float32)  # what the model will hold: float64 beyond float32's range becomes Inf
    # One pass, no mask: a NaN or Inf anywhere makes the float64 sum non-finite (float32 values cannot overflow it).
    if bool(torch.isfinite(loaded.sum(dtype=torch.float64))):
        return None
    nan, inf = int(torch.isnan(loaded).sum()), int(torch.isinf(loaded).sum())
    return f"{key} ({nan} NaN, {inf} Inf)"


def validate_state_dict(
    sd: dict[str, torch.Tensor], layout: ExpectedLayout, source: str, detected: bool
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``sd`` checked key by key against ``layout`` and converted to its dtypes; notes on conversions.

    Every problem is collected first (missing, unexpected, mis-shaped, wrong dtype,
    NaN/Inf), then raised as one ``PsdeployError`` line naming the keys.
    """
    expected = layout.keys
    # Old checkpoints lack BN's step counter; it does not affect inference.
    counters = {k: torch.zeros(shape, dtype=dtype) for k, (shape, dtype) in expected.items()
                if _is_step_counter(k) and k not in sd}
    sd = {**counters, **sd}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    present = sorted(set(sd) & set(expected))
    misshaped = [f"{k} {tuple(sd[k].shape)} (expected {expected[k][0]})"
                 for k in present if tuple(sd[k].shape) != expected[k][0]]
    wrong_dtype = [p for p in (_dtype_problem(k, sd[k]) for k in present) if p is not None]
    non_finite = [p for p in (_non_finite(k, sd[k]) for k in present) if p is not None]
    structural = [_listed(label, items) for label, items in
                  (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if items]
    values = [_listed(label, items) for label, items in
              (("with a wrong dtype", wrong_dtype), ("with non-finite values (NaN/Inf)", non_finite)) if items]
    if structural or values:
        name = layout.config.name
        if structural:
            head = f"does not fit {name}" + (" (the closest known architecture; --arch picks another)"
                                             if detected else "")
        else:
            head = f"cannot load the weights of {name}"
        raise PsdeployError(f"{source}: {head}: " + "; ".join(structural + values))
    converted: dict[str, int] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        want = expected[key][1]
        if value.dtype != want:
            if want.is_floating_point:
                name = str(value.dtype).removeprefix("torch.")
                converted[name] = converted.get(name, 0) + 1
            value = value.to(want)
        out[key] = value
    notes = [f"loaded {n} {name} tensors as float32" for name, n in sorted(converted.items())]
    return out, notes


def _empty_model(config: ResNetConfig, keys: set[str]) -> ResNet:
    """``config``'s model with uninitialised storage (every entry is about to be overwritten)."""
    with torch.device("meta"):
        model = ResNet(config)
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    if names != keys:  # something outside the state dict (a non-persistent buffer): initialise normally
        return build(config)
    return model.to_empty(device="cpu").eval()


def load_layout(
    sd: dict[str, torch.Tensor], source: str, arch: str | None = None, is_backbone: bool = False
) -> tuple[ResNet, ResNetConfig, list[str]]:
    """Detect, validate every key, and only then build the model and load the weights."""
    layout = detect_layout(sd, source, arch, is_backbone)
    sd, notes = validate_state_dict(sd, layout, source, detected=arch is None)
    model = _empty_model(layout.config, set(layout.keys))
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:  # validation should have caught everything; never a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PsdeployError(f"{source}: does not fit {layout.config.name}: {first}") from None
    return model.eval(), layout.config, notes


def load_seeded(spec: str) -> LoadedModel:
    """``seeded:ARCH[@SEED]``: a synthetic released-like model (random weights, real structure)."""
    from psdeploy.arch.seeded import seeded_model

    body = spec.removeprefix(SEEDED_PREFIX)
    arch, _, seed_text = body.partition("@")
    if seed_text and not seed_text.isdigit():
        raise PsdeployError(f"{spec}: expected seeded:ARCH or seeded:ARCH@SEED with an integer seed")
    seed = int(seed_text or 0)
    model = seeded_model(arch, seed)
    return LoadedModel(model, model.cfg, spec, f"seeded-{arch}-{seed}", (f"synthetic weights, seed {seed}",))


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
    model, config, converted = load_layout(filtered.state_dict, source, arch, filtered.is_detector_backbone)
    return LoadedModel(model, config, source, sha256_of(Path(path)),
                       (*notes, *filtered.notes, *converted))
