"""Artifact directories: the compiled module, a JSON manifest, nothing half-written.

A compile builds into a hidden sibling directory and renames it into place only
when the artifact has been verified; on any failure the sibling is removed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from psdeploy.compile.targets import TargetSpec
from psdeploy.errors import PsdeployError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass
class Manifest:
    backend: str
    target: str
    target_spec: dict[str, object] | None
    arch: str
    lowering: str
    source: str
    source_sha256: str
    input_shape: list[int]
    output_names: list[str]
    module_file: str
    precision: str = "f32"
    winograd: str = "off"
    versions: dict[str, str] = field(default_factory=dict)
    tuning: dict[str, object] | None = None
    parity: dict[str, object] | None = None
    accuracy: dict[str, object] | None = None
    lowering_search: list[dict[str, object]] | None = None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    format: int = MANIFEST_FORMAT

    def write(self, directory: Path) -> None:
        (directory / MANIFEST).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        if not path.is_file():
            raise PsdeployError(f"{directory}: not a psdeploy artifact (no {MANIFEST})")
        try:
            data = json.loads(path.read_text())
            if data.get("format") != MANIFEST_FORMAT:
                raise PsdeployError(f"{path}: manifest format {data.get('format')}, expected {MANIFEST_FORMAT}")
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise PsdeployError(f"{path}: unreadable manifest ({exc.__class__.__name__})") from None

    @property
    def spec(self) -> TargetSpec:
        return TargetSpec(self.backend, self.target, self.target_spec)


def check_output_dir(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise PsdeployError(f"-o {out}: already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise PsdeployError(f"-o {out}: exists and is not a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise PsdeployError(f"-o {out}: parent directory {parent} does not exist")


@contextlib.contextmanager
def staging_dir(out: Path, force: bool):
    """Yield a fresh hidden directory beside ``out``; move it to ``out`` only on success."""
    check_output_dir(out, force)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent or "."))
    try:
        yield stage
        if out.exists():
            backup = out.with_name(f".{out.name}.old")
            out.rename(backup)
            stage.rename(out)
            shutil.rmtree(backup)
        else:
            stage.rename(out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)


def open_artifact(directory: Path, threads: int | None = None, precision: str | None = None):
    """An ``OpenedRunner`` over a compiled artifact, whatever its backend."""
    from psdeploy.runtime import OpenedRunner

    manifest = Manifest.read(directory)
    module = directory / manifest.module_file
    if not module.exists():
        raise PsdeployError(f"{directory}: {manifest.module_file} is missing")
    shape = tuple(manifest.input_shape)
    if manifest.backend == "openvino":
        from psdeploy.compile.openvino_backend import load_runner
        from psdeploy.compile.targets import require_openvino

        require_openvino()
        run, actual = load_runner(module, precision or manifest.precision, threads)
        return OpenedRunner(run, f"openvino-cpu ({actual})", shape, manifest.output_names)
    if manifest.backend == "tvm":
        from psdeploy.compile.targets import require_tvm
        from psdeploy.compile.tvm_backend import load_runner

        require_tvm()
        label = f"tvm {manifest.spec.key}"
        return OpenedRunner(load_runner(module, manifest.spec, threads), label, shape, manifest.output_names)
    raise PsdeployError(f"{directory}: unknown backend {manifest.backend!r} in {MANIFEST}")
