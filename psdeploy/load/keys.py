"""Foreign key layouts remapped in one place (timm's ``checkpoint_filter_fn`` idea).

Handles the wrappers users actually have: bare state dicts, ``{"state_dict": ...}``
and ``{"model": ...}`` (with ``meta``/``optimizer`` beside), DataParallel's
``module.`` prefix and mmdetection detectors whose backbone keys start with
``backbone.``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from psdeploy.errors import PsdeployError

_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "net")


@dataclass
class FilteredStateDict:
    state_dict: dict[str, torch.Tensor]
    is_detector_backbone: bool = False
    notes: list[str] = field(default_factory=list)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def unwrap(obj: Any, source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Find the state dict inside the wrappers; say which wrappers were peeled."""
    notes: list[str] = []
    for _ in range(4):
        if _is_state_dict(obj):
            return obj, notes
        if isinstance(obj, dict):
            inner = next((k for k in _WRAPPER_KEYS if k in obj), None)
            if inner is not None:
                notes.append(f"unwrapped {inner!r}")
                obj = obj[inner]
                continue
            tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
            if tensors and len(tensors) >= len(obj) - 2:
                return tensors, notes
        break
    what = type(obj).__name__ if not isinstance(obj, dict) else f"dict with keys {sorted(map(str, obj))[:6]}"
    raise PsdeployError(
        f"{source}: no state dict found (got {what}); expected a state dict, or one under "
        f"{', '.join(repr(k) for k in _WRAPPER_KEYS)}"
    )


def filter_keys(state_dict: dict[str, torch.Tensor], source: str) -> FilteredStateDict:
    """Strip ``module.`` prefixes; reduce a detector checkpoint to its backbone."""
    notes: list[str] = []
    if all(k.startswith("module.") for k in state_dict):
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
        notes.append("stripped 'module.' (DataParallel)")
    backbone = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
    if backbone:
        dropped = len(state_dict) - len(backbone)
        notes.append(f"detector checkpoint: kept {len(backbone)} 'backbone.' keys, dropped {dropped} neck/head keys")
        return FilteredStateDict(backbone, True, notes)
    if not state_dict:
        raise PsdeployError(f"{source}: the state dict is empty")
    return FilteredStateDict(dict(state_dict), False, notes)
