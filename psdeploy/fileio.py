"""One rule for every output psdeploy writes (export -o, compile -o, report -o, prune-db -o, run --save-output,
bench --json), kept here and nowhere else:

- **An existing output is refused** in one line naming the option (``-o out.onnx: already exists; pass --force
  to replace it``) unless ``force`` (the commands' ``--force``) is given; then it is replaced whole.
- **Missing parent folders are created** (``mkdir -p``); if the write then fails, the folders it created are
  removed again (those that are still empty), so a failed command leaves the file system as it found it.
- **Nothing half-written**: work goes to a hidden temporary sibling of the destination (same directory, so the
  final rename is atomic) and is renamed into place only when the block that fills it succeeds; on any
  failure, Ctrl-C included, the sibling is removed and an existing destination is left untouched.
- **The umask decides the modes**: the temporary sibling (``mkstemp``/``mkdtemp`` make them 0600/0700) is
  given, before the rename, the mode a plain ``open``/``mkdir`` would have given (0644/0755 under umask
  022), and so is every file and folder inside a directory output (executables keep their x bits).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from psdeploy.errors import PsdeployError


def current_umask() -> int:
    """The process's umask, read once per output. Linux states it in /proc/self/status (read there, nothing
    changes); elsewhere it is set and at once restored, to 0o077 meanwhile, so a file another thread
    creates in that instant is private rather than open to all."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _mode(path: Path, mask: int, is_dir: bool) -> int:
    """What ``mkdir``/``open`` under ``mask`` gives; a file that someone made executable stays executable."""
    executable = not is_dir and os.lstat(path).st_mode & 0o111
    return (0o777 if is_dir or executable else 0o666) & ~mask


def apply_umask(path: Path, mask: int | None = None) -> None:
    """Give ``path`` (and, for a directory, everything inside it, symlinks left alone) the umask's modes."""
    mask = current_umask() if mask is None else mask
    if not path.is_dir():
        os.chmod(path, _mode(path, mask, False))
        return
    for root, _, files in os.walk(path):  # symlinked folders are listed, never entered
        os.chmod(root, _mode(Path(root), mask, True))
        for name in files:
            file = Path(root, name)
            if stat.S_ISREG(os.lstat(file).st_mode):
                os.chmod(file, _mode(file, mask, False))


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def check_destination(path: Path, option: str, *, directory: bool = False, force: bool = False) -> None:
    """Fail before any work if ``path`` cannot be produced (``option`` names the flag in the message): it exists
    and ``force`` is not given, it is of the other kind, or the nearest existing folder above it is none or
    not writable. Missing folders in between are fine: ``atomic_output`` creates them."""
    path = Path(path)
    if path.name in ("", ".", ".."):  # the current folder, its parent, or the root: nothing to rename
        raise PsdeployError(f"{option} {path}: expected the name of a new {'folder' if directory else 'file'}")
    if path.exists() or path.is_symlink():
        if not force:
            raise PsdeployError(f"{option} {path}: already exists; pass --force to replace it")
        if path.is_dir() != directory:
            kind = "a directory" if directory else "a file path"
            raise PsdeployError(f"{option} {path}: exists and is not {kind}")
    ancestor = _parent(path)
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PsdeployError(f"{option} {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PsdeployError(f"{option} {path}: directory {ancestor} is not writable")


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``; the folders this call created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    created = []
    for each in reversed(missing):
        try:
            each.mkdir()
        except FileExistsError:  # made meanwhile by someone else: theirs, not ours to remove
            continue
        created.append(each)
    return created


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # something else was put there meanwhile: keep it
            return


@contextlib.contextmanager
def atomic_output(path: str | Path, option: str = "-o", *, directory: bool = False,
                  force: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``path`` (a file, or a directory if asked) to fill; it replaces
    ``path`` only if the block succeeds (the rule in this module's docstring)."""
    path = Path(path)
    check_destination(path, option, directory=directory, force=force)
    parent = _parent(path)
    created = _make_parents(parent)
    try:
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial" + path.suffix, dir=parent)
            os.close(fd)
            tmp = Path(name)
        try:
            yield tmp
            apply_umask(tmp)
            if not force and (path.exists() or path.is_symlink()):  # appeared while the block ran
                raise PsdeployError(f"{option} {path}: already exists; pass --force to replace it")
            if directory and path.exists():
                backup = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
                os.replace(path, backup / path.name)
                os.replace(tmp, path)
                shutil.rmtree(backup)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp)
            elif tmp.exists():
                tmp.unlink()
    except BaseException:
        _remove_if_empty(created)
        raise


def write_atomic(path: str | Path, content: str | bytes, option: str = "-o", *, force: bool = False) -> Path:
    """``path.write_text(content)`` (or ``write_bytes``) under the rule: whole or not at all."""
    with atomic_output(path, option, force=force) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)
    return Path(path)
