"""The backends behind one interface, and the one registry that maps names to them.

``backend_for(target)`` and ``open_runner(path)`` are the only dispatch in psdeploy:
compile, the lowering search, bench, profile and the reports all go through them.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import onnx

from psdeploy.backends.artifact import MANIFEST, KernelWork, Manifest
from psdeploy.backends.base import (
    Backend,
    BuildOptions,
    ConvTime,
    NodeTime,
    OpenedRunner,
    Profile,
    per_conv,
)
from psdeploy.backends.onnxruntime import OnnxruntimeBackend
from psdeploy.backends.openvino import OpenvinoBackend
from psdeploy.backends.targets import Target, parse_target
from psdeploy.backends.tvm import TvmBackend
from psdeploy.bounds import check_memory
from psdeploy.errors import PsdeployError
from psdeploy.export.counts import ConvKey, conv_keys
from psdeploy.export.node_names import layer_of, value_layers, with_layer

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


def open_runner(path: str | Path, threads: int | None = None) -> OpenedRunner:
    """An ONNX file (run by onnxruntime) or a compiled artifact directory (run by its backend)."""
    path = Path(path)
    if path.is_dir():
        return open_artifact(path, threads)
    if path.suffix != ".onnx" or not path.is_file():
        raise PsdeployError(f"{path}: expected an .onnx file or a compiled artifact directory")
    shape, outputs = onnx_signature(path)
    run, description = BACKENDS["onnxruntime"].open(path, parse_target("onnxruntime-cpu"), threads)
    return OpenedRunner(run, description, shape, outputs)


def build_and_open(onnx_path: Path, input_shape: tuple[int, ...], target: Target, options: BuildOptions,
                   threads: int | None = None) -> OpenedRunner:
    """Build ``onnx_path`` for ``target`` into a temporary directory and open it (searches, reports).
    The directory goes once the runtime has loaded the module (what it still maps stays valid until closed)."""
    backend = backend_for(target)
    backend.check_options(target, options)
    with tempfile.TemporaryDirectory(prefix=f"psdeploy-{backend.name}-") as work:
        backend.build(onnx_path, input_shape, target, options, Path(work))
        run, description = backend.open(Path(work) / backend.module_file, target, threads, options.precision)
    _, outputs = onnx_signature(onnx_path)
    return OpenedRunner(run, description, input_shape, outputs)


def profile(path: str | Path, batch: int | None, runs: int, threads: int | None = None,
            on: str | None = None) -> Profile:
    """Per-node time from the runtime's own counters: an artifact on its backend, an ONNX file on the
    runtime named by ``on`` (``onnxruntime-cpu``, the default, or ``openvino-cpu``)."""
    from psdeploy.verify.parity import make_input

    path = Path(path)
    if path.is_dir():
        manifest = Manifest.read(path)
        target = manifest.target_object
        module = artifact_module(path, manifest, backend_for(target))
        if on is not None and on != target.name:
            raise PsdeployError(f"--on {on}: {path} is an artifact for {target.name}; it runs there only")
        declared = tuple(manifest.input_shape)
    elif path.suffix == ".onnx" and path.is_file():
        target, module = parse_target(on or "onnxruntime-cpu"), path
        if target.backend == "tvm":
            raise PsdeployError(f"--on {on}: profile a TVM artifact (psdeploy compile) rather than an ONNX file")
        declared, _ = onnx_signature(path)
    else:
        raise PsdeployError(f"{path}: expected an .onnx file or a compiled artifact directory")
    batch = batch or declared[0] or 1
    if declared[0] and batch != declared[0]:
        raise PsdeployError(f"{path}: built for batch {declared[0]}, cannot profile --batch {batch}; "
                            f"export with --dynamic-batch or compile for that batch")
    check_memory(f"--batch {batch}", (batch, *declared[1:]))
    backend = backend_for(target)
    x = make_input((batch, *declared[1:]), seed=0)
    with tempfile.TemporaryDirectory(prefix="psdeploy-profile-") as work:
        if not path.is_dir() and target.backend != "onnxruntime":
            backend.build(path, x.shape, target, BuildOptions(), Path(work))
            module = Path(work) / backend.module_file
        rows, runs_on = backend.profile(module, target, x, runs, threads)
    unplaced = [row for row in rows if not layer_of(row.name)]
    if unplaced and not path.is_dir():  # nodes a runtime names after the value they write: that value's layer
        layers = value_layers(path)
        for row in unplaced:
            row.name = with_layer(row.name, layers.get(row.name.split("/")[0], ""))
    result = Profile(str(path), runs_on, batch, runs, rows)
    result.convs = _kernel_convs(rows, manifest.kernels or {}) if path.is_dir() else _layer_convs(result, path)
    return result


def _kernel_convs(rows: list[NodeTime], kernels: dict[str, KernelWork]) -> list[ConvTime]:
    """Per conv key, the time of the compiled kernels that compute it (TVM: a kernel per workload)."""
    return per_conv([ConvTime(kernels[r.name].key, r.ms_per_run, r.calls_per_run,
                              kernels[r.name].flops * r.calls_per_run) for r in rows if r.name in kernels])


def _layer_convs(profile: Profile, onnx_path: Path) -> list[ConvTime]:
    """Per conv key, the conv nodes the runtime ran for layers that are one plain Conv (not a PSConv layer's
    branches); the layout reorders around them are counted apart, as the profile's reorders."""
    keys: dict[str, list[ConvKey]] = defaultdict(list)
    for node, key in conv_keys(onnx.load(str(onnx_path), load_external_data=False)).items():
        keys[layer_of(node)].append(key)
    times = []
    for r in profile.nodes:
        key = keys.get(layer_of(r.name), [])
        if "Conv" in r.op_type and len(key) == 1:
            times.append(ConvTime(key[0], r.ms_per_run, r.calls_per_run, key[0].flops(profile.batch) * r.calls_per_run))
    return per_conv(times)


__all__ = ["BACKENDS", "Backend", "artifact_module", "BuildOptions", "Manifest", "NodeTime", "OpenedRunner", "Profile", "Target", "backend_for",
           "build_and_open", "get_backend", "open_artifact", "open_runner", "parse_target", "profile"]
