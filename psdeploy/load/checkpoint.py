"""Safe checkpoint reading: ``torch.load(weights_only=True)`` and nothing else.

A checkpoint whose unpickling needs arbitrary code is refused, never executed.
Before ``torch.load`` sees a file its first bytes say what it is: PyTorch writes
zip archives (``PK\\x03\\x04``) or, in the legacy format, a pickle (``\\x80`` and
the protocol byte). Anything else is not a PyTorch checkpoint, and saying so is
clearer than whatever the unpickler makes of random bytes.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from psdeploy.errors import PsdeployError
from psdeploy.sources import check_source

ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOLS = range(2, 6)  # torch.save's legacy format writes protocol 2; plain pickles use up to 5


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_kind(head: bytes) -> str | None:
    """``"zip"``, ``"pickle"`` or ``None`` (neither) from a file's first bytes."""
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return "pickle"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _unpickler_detail(exc: BaseException) -> str:
    """The line of torch's long weights-only message that says what went wrong."""
    for line in str(exc).splitlines():
        if "WeightsUnpickler error:" in line:
            # torch goes on to explain how to allow the global; psdeploy never does
            detail = line.split("WeightsUnpickler error:", 1)[1].split(" Please use", 1)[0].strip()
            if detail:
                return detail
    for line in str(exc).splitlines():
        if "Unsupported" in line:
            return line.strip()
    return _first_line(exc)


def _refused_global(detail: str) -> str | None:
    """``module.name`` when the unpickler refused a global, else ``None``."""
    marker = "Unsupported global: GLOBAL "
    if marker not in detail:
        return None
    rest = detail.split(marker, 1)[1].split()
    return rest[0] if rest else ""


def _allowed_globals() -> list[str]:
    try:
        from torch import _weights_only_unpickler

        return list(_weights_only_unpickler._get_allowed_globals())
    except Exception:  # private API: without it, every refused global is taken at its word
        return []


def _is_cut_name(qualified: str) -> bool:
    """A refused global that is the beginning of an allowed one: the file ends inside a GLOBAL opcode."""
    stem = qualified.removesuffix(".")  # "collections." when the file stops right after the module name
    if not stem:  # "GLOBAL .": the file stops right after the opcode
        return True
    return any(name != stem and name.startswith(stem) for name in _allowed_globals())


def read_checkpoint(path: str | Path) -> Any:
    """The unpickled object of ``path``, with only tensors and plain containers allowed."""
    path = Path(path)
    check_source(str(path))
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise PsdeployError(f"{path}: cannot read the file: {_first_line(exc)}") from None
    if size == 0:
        raise PsdeployError(f"{path}: file is empty; expected a PyTorch checkpoint")
    kind = file_kind(head)
    if kind is None:
        raise PsdeployError(
            f"{path}: not a PyTorch checkpoint: neither a zip archive (torch.save's format, starts with "
            f"'PK\\x03\\x04') nor a pickle (starts with '\\x80' and the protocol); the file starts with {head[:8]!r}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": one-line errors only
            # mmap (zip format only): no second in-memory copy of a large checkpoint while it is checked and loaded
            return torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        refused = _refused_global(detail)
        if refused is not None and not _is_cut_name(refused):
            raise PsdeployError(
                f"{path}: refused: the checkpoint needs arbitrary unpickling (code execution), "
                f"which psdeploy never does; re-save it as a plain state dict "
                f"(torch.save(model.state_dict(), ...)). Detail: {detail}"
            ) from None
        what = "zip archive" if kind == "zip" else "pickle"
        raise PsdeployError(
            f"{path}: not a readable PyTorch checkpoint: a {what} that the weights-only reader cannot parse "
            f"(truncated or corrupt, or not written by torch.save): {detail}"
        ) from None
    except MemoryError:
        raise PsdeployError(f"{path}: not a readable PyTorch checkpoint: out of memory while reading it") from None
    except Exception as exc:  # torch.load's parsers raise RuntimeError, ValueError, EOFError, KeyError... on bad bytes
        raise PsdeployError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from None
