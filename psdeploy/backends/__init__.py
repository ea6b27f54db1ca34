"""The backends behind one interface, and the one registry that maps names to them.

``backend_for(target)`` and ``open_runner(path)`` are the only dispatch in psdeploy:
compile, the lowering search, bench, profile (``profiling.py``) and the reports all go through them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from psdeploy.backends.artifact import MANIFEST, Manifest
from psdeploy.backends.base import Backend, BuildOptions, NodeTime, OpenedRunner, Profile
from psdeploy.backends.onnxruntime import OnnxruntimeBackend
from psdeploy.backends.openvino import OpenvinoBackend
from psdeploy.backends.targets import Target, parse_target
from psdeploy.backends.tvm import TvmBackend
from psdeploy.errors import PsdeployError

BACKENDS: dict[str, Backend] = {b.name: b for b in (OnnxruntimeBackend(), OpenvinoBackend(), TvmBackend())}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise PsdeployError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def backend_for(target: Target) -> Backend:
    backend = get_backend(target.backend)
    backend.require()
    return backend


def onnx_signature(path: Path) -> tuple[tuple[int, ...], list[str]]:
    """(input shape with 0 where dynamic, output names) of an ONNX file, or a one-line error."""
    try:
        model = onnx.load(str(path), load_external_data=False)
        dims = model.graph.input[0].type.tensor_type.shape.dim
    except Exception as exc:  # onnx raises several unrelated types for a bad file
        raise PsdeployError(f"{path}: not a readable ONNX model ({type(exc).__name__}); "
                            f"expected a file written by an ONNX exporter") from None
    return tuple(d.dim_value for d in dims), [o.name for o in model.graph.output]


def artifact_module(directory: Path, manifest: Manifest, backend: Backend) -> Path:
    """The artifact's module: the backend's own file name inside ``directory``, a file and not a link.
    A manifest cannot point anywhere else, as opening a module runs it (a TVM module is a shared library)."""
    module = directory / backend.module_file
    if manifest.module_file != backend.module_file:
        raise PsdeployError(f"{directory / MANIFEST}: module_file {manifest.module_file!r}; expected the "
                            f"{backend.name} module {backend.module_file!r}, inside the artifact directory")
    if module.is_symlink():
        raise PsdeployError(f"{module}: a symbolic link; expected the {backend.name} module itself inside the "
                            f"artifact directory")
    if not module.is_file():
        raise PsdeployError(f"{directory}: {backend.module_file} is missing; expected the {backend.name} module "
                            f"beside {MANIFEST}")
    return module


def open_artifact(directory: Path, threads: int | None = None) -> OpenedRunner:
    manifest = Manifest.read(directory)
    target = manifest.target_object
    backend = backend_for(target)
    module = artifact_module(directory, manifest, backend)
    run, description = backend.open(module, target, threads, manifest.precision)
    return OpenedRunner(run, description, tuple(manifest.input_shape), manifest.output_names)


def _check_model_path(path: Path) -> None:
    if not path.is_dir() and (path.suffix != ".onnx" or not path.is_file()):
        raise PsdeployError(f"{path}: expected an .onnx file or a compiled artifact directory")


def model_input_shape(path: str | Path) -> tuple[int, ...]:
    """The input shape (0 where dynamic) of an ONNX file or artifact, read without loading its runtime."""
    path = Path(path)
    _check_model_path(path)
    return tuple(Manifest.read(path).input_shape) if path.is_dir() else onnx_signature(path)[0]


def open_runner(path: str | Path, threads: int | None = None) -> OpenedRunner:
    """An ONNX file (run by onnxruntime) or a compiled artifact directory (run by its backend)."""
    path = Path(path)
    _check_model_path(path)
    if path.is_dir():
        return open_artifact(path, threads)
    shape, outputs = onnx_signature(path)
    run, description = BACKENDS["onnxruntime"].open(path, parse_target("onnxruntime-cpu"), threads)
    return OpenedRunner(run, description, shape, outputs)


@dataclass
class BuiltModule:
    """A module built for a target, in a directory that outlives it: opened as often as wanted (each open is a
    new load of the model: its own compiled graph and buffers)."""

    backend: Backend
    module: Path
    target: Target
    options: BuildOptions
    input_shape: tuple[int, ...]
    output_names: list[str]
    quantization: object | None = None

    def open(self, threads: int | None = None) -> OpenedRunner:
        run, description = self.backend.open(self.module, self.target, threads, self.options.precision)
        return OpenedRunner(run, description, self.input_shape, self.output_names, self.quantization)


def build_module(onnx_path: Path, input_shape: tuple[int, ...], target: Target, options: BuildOptions,
                 directory: Path) -> BuiltModule:
    """Build ``onnx_path`` for ``target`` into ``directory`` (searches, reports)."""
    backend = backend_for(target)
    backend.check_options(target, options)
    built = backend.build(onnx_path, input_shape, target, options, directory) or {}
    _, outputs = onnx_signature(onnx_path)
    return BuiltModule(backend, directory / backend.module_file, target, options, input_shape, outputs,
                       built.get("quantization"))


__all__ = ["BACKENDS", "Backend", "artifact_module", "BuildOptions", "Manifest", "NodeTime", "OpenedRunner", "Profile",
           "BuiltModule", "Target", "backend_for", "build_module", "get_backend", "model_input_shape", "onnx_signature",
           "open_artifact", "open_runner",
           "parse_target"]
