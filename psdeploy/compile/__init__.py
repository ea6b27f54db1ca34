"""Compile step: checkpoint or verified ONNX -> built, verified artifact directory.

The artifact is staged in a hidden sibling directory and moved into place only after
it has run and matched the checkpoint on its backend; on any failure the previous
artifact (with ``--force``) is left as it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import onnx

from psdeploy.arch.registry import default_input_shape
from psdeploy.backends import BuildOptions, Manifest, Target, backend_for
from psdeploy.backends.int8 import AccuracyGate, CalibrationRecord
from psdeploy.backends.tvm.host import cannot_run_here
from psdeploy.bounds import check_memory
from psdeploy.errors import PsdeployError
from psdeploy.export import AUTO, ExportRecord, ExportResult, export_onnx
from psdeploy.fileio import atomic_output
from psdeploy.load import LoadedModel, load_model
from psdeploy.search import search_lowerings
from psdeploy.sources import COMPILABLE, check_source
from psdeploy.parity import DEFAULT_TOLERANCE, ParityReport
from psdeploy.verify.accuracy import check_top1
from psdeploy.verify.artifact import gate_staged, verify_staged
from psdeploy.verify.gate import synthetic_samples

VERSIONED = ("torch", "onnx", "onnxruntime", "openvino", "apache-tvm", "apache-tvm-ffi")


@dataclass
class CompileRequest:
    source: str | ExportResult  # checkpoint, seeded:ARCH, or an ONNX file psdeploy exported (or its result)
    target: Target
    output: Path
    options: BuildOptions = field(default_factory=BuildOptions)
    lowering: str = "grouped"
    input_shape: tuple[int, ...] | None = None
    tolerance: float = DEFAULT_TOLERANCE
    force: bool = False
    arch: str | None = None
    gate: AccuracyGate = field(default_factory=AccuracyGate)  # what a reduced-precision build must meet beside fp32


@dataclass
class CompileResult:
    output: Path
    manifest: Manifest
    parity: ParityReport | None  # None when the artifact cannot run here (cuda without a GPU), or is reduced precision (gated)
    ran: bool


def _versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _exported_onnx(path: Path) -> tuple[ExportRecord, list[str]]:
    """The export record and the output names of an ONNX file ``psdeploy export`` wrote (one read)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        raise PsdeployError(f"{path}: not a readable ONNX model; expected an ONNX file from 'psdeploy export'") from None
    record = ExportRecord.read(model, str(path))
    check_memory(f"{path}: input shape {','.join(map(str, record.input_shape))}", record.input_shape)
    return record, [o.name for o in model.graph.output]


def _reference_for_onnx(record: ExportRecord) -> LoadedModel | None:
    """The checkpoint an exported ONNX came from, when it can still be found unchanged."""
    if record.source.startswith("seeded:") or Path(record.source).is_file():
        loaded = load_model(record.source, record.arch)
        if loaded.sha256 == record.source_sha256:
            return loaded
    return None


def _search(request: CompileRequest, loaded: LoadedModel, shape: tuple[int, ...]):
    """``--lowering auto`` for this very target: candidates are built with the request's target and options."""
    if reason := cannot_run_here(request.target):
        raise PsdeployError(f"--lowering auto with --target {request.target.name} times candidates here, and "
                            f"{reason}; choose a lowering (grouped, polyphase, fused) or run on the target machine")
    cores = os.cpu_count() or 1
    threads = min(int((request.target.tvm_target or {}).get("num-cores") or cores), cores)
    return search_lowerings(loaded.model, shape, request.target, request.options, threads)


def compile_model(request: CompileRequest) -> CompileResult:
    """Build, verify and write the artifact; nothing appears at ``request.output`` on failure."""
    target, options = request.target, request.options
    backend = backend_for(target)
    backend.check_options(target, options)
    if isinstance(request.source, str):
        check_source(request.source, COMPILABLE)
    with atomic_output(request.output, "-o", directory=True, force=request.force) as stage:
        from_onnx = isinstance(request.source, ExportResult) or request.source.endswith(".onnx")
        if from_onnx:
            onnx_path = request.source.path if isinstance(request.source, ExportResult) else Path(request.source)
            record, names = _exported_onnx(onnx_path)
            loaded = _reference_for_onnx(record)
            shape = record.input_shape
            if record.dynamic_batch and backend.keeps_dynamic_batch:
                shape = (0, *shape[1:])  # the artifact runs any batch, as the ONNX does
            elif record.dynamic_batch and request.input_shape:
                shape = request.input_shape
        else:
            loaded = load_model(request.source, request.arch)
            shape = request.input_shape or default_input_shape(loaded.config)
            onnx_path = stage / "model.source.onnx"
            choices = search = None
            if request.lowering == AUTO:
                choices, search = _search(request, loaded, shape)
            record = export_onnx(loaded, onnx_path, request.lowering, shape, tolerance=request.tolerance,
                                 choices=choices, search=search).record
            names = loaded.model.output_names
        if options.calibration is not None:
            options.calibration.check_shape(shape)
        build_info = backend.build(onnx_path, shape, target, options, stage)
        manifest = Manifest(
            backend=target.backend, target=target.name, target_spec=target.tvm_target, arch=record.arch,
            lowering=record.lowering, source=record.source, onnx=str(onnx_path) if from_onnx else None,
            source_sha256=record.source_sha256, input_shape=list(shape), output_names=names,
            module_file=backend.module_file, precision=options.precision, winograd=options.winograd,
            layout=backend.layout(target, options),
            versions=_versions(), lowering_search=record.search,
            calibration=CalibrationRecord.of(options.calibration) if options.calibration else None,
            **(build_info or {}),
        )
        manifest.write(stage)
        not_here = cannot_run_here(target)  # a GPU or CPU features this machine lacks: built, never run here
        reduced = options.precision != "f32"
        parity = None
        if not_here:
            manifest.parity = {"status": f"not run: {not_here}"}
        elif reduced:  # gated beside fp32 instead of fp32 parity: int8 on its held-out data, f16/bf16 on synthetic
            data = options.calibration or synthetic_samples(shape)
            manifest.gate = gate_staged(stage, loaded, onnx_path, data, request.gate)
        else:
            parity = verify_staged(stage, loaded, onnx_path, request.tolerance)
            manifest.parity = parity.to_dict()
        ran = not not_here
        demo = loaded is not None and loaded.config.demo_data
        if ran and demo and tuple(shape[2:]) == (loaded.config.input_size,) * 2:
            manifest.accuracy = check_top1(stage, loaded, request.gate.max_top1_drop if reduced else None)
        manifest.write(stage)
        if onnx_path.parent == stage:
            onnx_path.unlink()
    return CompileResult(request.output, manifest, parity, ran)


__all__ = ["CompileRequest", "CompileResult", "compile_model"]
