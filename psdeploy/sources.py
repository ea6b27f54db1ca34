"""What a model argument names, told apart from the file system alone: ``seeded:ARCH``, a checkpoint
file, an ONNX file, or a compiled artifact directory.

Cheap on purpose: the command line checks its arguments with it before importing the pipeline, so
a missing file or a mistaken directory is reported at once, in the same words the API uses.
"""

from __future__ import annotations

from pathlib import Path

from psdeploy.errors import PsdeployError

SEEDED_PREFIX = "seeded:"
MANIFEST = "manifest.json"  # what makes a directory a compiled artifact
CHECKPOINT = "a checkpoint file (.pth) or seeded:ARCH"
COMPILABLE = "a checkpoint file (.pth), seeded:ARCH, or an ONNX file that 'psdeploy export' wrote"


def is_artifact(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def check_source(source: str, expected: str = CHECKPOINT) -> None:
    """Refuse, in one line, a source that cannot be ``expected``: missing, or a directory (an artifact?)."""
    if source.startswith(SEEDED_PREFIX):
        return
    path = Path(source)
    if path.is_dir():
        what = "a compiled artifact (a directory with manifest.json)" if is_artifact(path) else "a directory"
        raise PsdeployError(f"{path}: {what}; expected {expected}")
    if not path.is_file():
        kind = "ONNX" if path.suffix == ".onnx" else "checkpoint"
        raise PsdeployError(f"{path}: no such {kind} file; expected {expected}")
