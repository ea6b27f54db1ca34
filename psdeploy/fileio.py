"""Nothing half-written: every file and directory psdeploy produces appears whole or not at all.

Work goes to a hidden temporary sibling of the destination (same directory, so the
final rename is atomic) and is renamed into place only when the block that fills it
succeeds; on any failure, Ctrl-C included, the sibling is removed and an existing
destination is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from psdeploy.errors import PsdeployError


def check_destination(path: Path, option: str, *, directory: bool = False, force: bool = True) -> None:
    """Fail before any work if ``path`` cannot be produced (``option`` names the flag in the message)."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists() and not force:
        raise PsdeployError(f"{option} {path}: already exists; pass --force to replace it")
    if path.exists() and path.is_dir() != directory:
        kind = "a directory" if directory else "a file path"
        raise PsdeployError(f"{option} {path}: exists and is not {kind}")
    if not parent.is_dir():
        raise PsdeployError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PsdeployError(f"{option} {path}: directory {parent} is not writable")


@contextlib.contextmanager
def atomic_output(path: str | Path, option: str = "-o", *, directory: bool = False,
                  force: bool = True) -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``path`` (a file, or a directory if asked) to fill;
    it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    check_destination(path, option, directory=directory, force=force)
    parent = path.parent if str(path.parent) else Path(".")
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial" + path.suffix, dir=parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory and path.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            os.replace(path, backup / path.name)
            os.replace(tmp, path)
            shutil.rmtree(backup)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()


def write_atomic(path: str | Path, content: str | bytes, option: str = "-o") -> Path:
    """``path.write_text(content)`` (or ``write_bytes``), whole or not at all."""
    with atomic_output(path, option) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)
    return Path(path)
