"""Safe checkpoint reading: ``torch.load(weights_only=True)`` and nothing else.

A checkpoint whose unpickling needs arbitrary code is refused, never executed.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from psdeploy.errors import PsdeployError


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> Any:
    """The unpickled object of ``path``, with only tensors and plain containers allowed."""
    path = Path(path)
    if not path.is_file():
        raise PsdeployError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise PsdeployError(f"{path}: file is empty; expected a PyTorch checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PsdeployError(
            f"{path}: refused: the checkpoint needs arbitrary unpickling (code execution), "
            f"which psdeploy never does; re-save it as a plain state dict "
            f"(torch.save(model.state_dict(), ...)). Detail: {first}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PsdeployError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {first}") from None
