"""Compile step: checkpoint or verified ONNX -> tuned, verified artifact directory."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import onnx

from psdeploy.compile.artifact import Manifest, open_artifact, staging_dir
from psdeploy.compile.targets import TargetSpec, parse_target
from psdeploy.compile.tvm_winograd import parse_winograd
from psdeploy.errors import PsdeployError
from psdeploy.export import export_onnx, read_metadata
from psdeploy.load import LoadedModel, load_model
from psdeploy.verify.parity import DEFAULT_TOLERANCE, ParityReport, compare
from psdeploy.verify.runners import onnxruntime_runner, torch_runner

DEFAULT_TUNING_DB = Path("tuning-db")
VERSIONED = ("torch", "onnx", "onnxruntime", "openvino", "apache-tvm", "apache-tvm-ffi")


@dataclass
class CompileRequest:
    source: str  # checkpoint, seeded:ARCH, or an ONNX file psdeploy exported
    target: TargetSpec
    output: Path
    lowering: str = "grouped"
    input_shape: tuple[int, ...] | None = None
    tune_trials: int = 0
    tuning_db: Path = DEFAULT_TUNING_DB
    precision: str = "f32"
    winograd: str = "off"  # TVM: off, f2, f4
    tolerance: float = DEFAULT_TOLERANCE
    force: bool = False
    arch: str | None = None


@dataclass
class CompileResult:
    output: Path
    manifest: Manifest
    parity: ParityReport | None  # None when the artifact cannot run here (cuda without a GPU)
    ran: bool


def _versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _reference_for_onnx(path: Path) -> tuple[LoadedModel | None, dict[str, str]]:
    """The checkpoint an exported ONNX came from, when it can still be found unchanged."""
    try:
        meta = read_metadata(onnx.load(str(path), load_external_data=False))
    except Exception:
        raise PsdeployError(f"{path}: not a readable ONNX model") from None
    if "arch" not in meta:
        raise PsdeployError(f"{path}: not a PS-ResNet/ResNet exported by psdeploy (no psdeploy metadata); "
                            f"export the checkpoint with 'psdeploy export' first, or compile the checkpoint")
    source = meta.get("source", "")
    if source.startswith("seeded:") or Path(source).is_file():
        loaded = load_model(source, meta["arch"])
        if loaded.sha256 == meta.get("source_sha256"):
            return loaded, meta
    return None, meta


def search_backend(request: CompileRequest) -> tuple[str, dict]:
    """Where ``--lowering auto`` times its candidates: on the target itself."""
    spec = request.target
    if spec.backend == "openvino":
        return "openvino", {}
    if spec.device == "cuda":
        from psdeploy.compile.tvm_backend import cuda_available

        if request.lowering == "auto" and not cuda_available():
            raise PsdeployError("--lowering auto with --target cuda times candidates on the GPU, and none is "
                                "visible here; choose a lowering (grouped, polyphase, fused) or run on the GPU "
                                "machine")
    wino = f"-wino{parse_winograd(request.winograd)}" if request.winograd != "off" else ""
    options = {"tvm_trials": request.tune_trials, "tvm_db": request.tuning_db}
    return ("tvm-cuda" if spec.device == "cuda" else "tvm-llvm") + wino, options


def compile_model(request: CompileRequest, on_batch=None) -> CompileResult:
    """Build, verify and write the artifact; nothing appears at ``request.output`` on failure."""
    spec = request.target
    if spec.backend == "openvino" and request.winograd != "off":
        raise PsdeployError(f"--winograd {request.winograd}: a TVM option; OpenVINO chooses its own kernels")
    with staging_dir(request.output, request.force) as stage:
        search = None
        if request.source.endswith(".onnx"):
            onnx_path = Path(request.source)
            loaded, meta = _reference_for_onnx(onnx_path)
            shape = tuple(int(v) for v in meta["input_shape"].split(","))
            arch, lowering, sha = meta["arch"], meta["lowering"], meta.get("source_sha256", "")
            if meta.get("dynamic_batch") == "true" and request.input_shape:
                shape = request.input_shape
        else:
            loaded = load_model(request.source, request.arch)
            onnx_path = stage / "model.onnx"
            backend, options = search_backend(request)
            exported = export_onnx(loaded, onnx_path, request.lowering, request.input_shape,
                                   tolerance=request.tolerance, search_backend=backend, search_options=options)
            shape, arch, lowering, sha = exported.input_shape, loaded.arch, request.lowering, loaded.sha256
            search = exported.search
        names = [o.name for o in onnx.load(str(onnx_path), load_external_data=False).graph.output]
        tuning = None
        if spec.backend == "openvino":
            from psdeploy.compile.openvino_backend import XML_FILE, convert

            convert(onnx_path, stage / XML_FILE)
            module_file = XML_FILE
        else:
            from psdeploy.compile.tvm_backend import MODULE_FILE, build

            summary = build(onnx_path, shape, spec, request.tuning_db, request.tune_trials, stage / MODULE_FILE,
                            on_batch, parse_winograd(request.winograd))
            tuning, module_file = summary.to_dict(), MODULE_FILE
        manifest = Manifest(
            backend=spec.backend, target=spec.name, target_spec=spec.tvm_target, arch=arch, lowering=lowering,
            source=request.source, source_sha256=sha, input_shape=list(shape), output_names=names,
            module_file=module_file, precision=request.precision, winograd=request.winograd, versions=_versions(),
            tuning=tuning, lowering_search=search,
        )
        manifest.write(stage)
        parity, ran = verify_staged(stage, loaded, onnx_path, request.tolerance)
        manifest.parity = parity.to_dict() if parity else {"status": "not run: no CUDA GPU on this machine"}
        if ran and loaded is not None and arch in DEMO_ARCHS:
            manifest.accuracy = check_top1(stage, loaded)
        manifest.write(stage)
        if onnx_path.parent == stage:
            onnx_path.unlink()
    return CompileResult(request.output, manifest, parity, ran)


DEMO_ARCHS = ("ps_resnet_digits", "resnet_digits")


def check_top1(directory: Path, loaded: LoadedModel) -> dict[str, object]:
    """Demo-family artifacts must give the checkpoint's held-out top-1, prediction for prediction."""
    from psdeploy.verify.accuracy import held_out_top1

    runner = open_artifact(directory)
    report = held_out_top1(torch_runner(loaded.model), runner.run, runner.batch)
    if not report.agree:
        raise PsdeployError(f"{runner.description}: held-out top-1 {report.candidate_top1:.4f} differs from the "
                            f"checkpoint's {report.reference_top1:.4f} (agreement {report.prediction_agreement:.4f})")
    return {"split": "sklearn digits held-out (25%, seed 0)", "samples": report.samples,
            "checkpoint_top1": report.reference_top1, "artifact_top1": report.candidate_top1,
            "prediction_agreement": report.prediction_agreement}


def verify_staged(directory: Path, loaded: LoadedModel | None, onnx_path: Path,
                  tolerance: float) -> tuple[ParityReport | None, bool]:
    manifest = Manifest.read(directory)
    if manifest.spec.device == "cuda":
        from psdeploy.compile.tvm_backend import cuda_available

        if not cuda_available():
            return None, False
    runner = open_artifact(directory, precision=manifest.precision)
    if loaded is not None:
        reference, ref_name = torch_runner(loaded.model), "checkpoint (torch)"
    else:
        reference, ref_name = onnxruntime_runner(onnx_path), "source ONNX (onnxruntime)"
    report = compare(reference, runner.run, [tuple(manifest.input_shape)], manifest.output_names,
                     candidate_name=runner.description, reference_name=ref_name, tolerance=tolerance,
                     seeds=(0, 1, 2))
    report.raise_if_failed()
    return report, True


def verify_artifact(directory: Path, checkpoint: str, arch: str | None = None,
                    tolerance: float = DEFAULT_TOLERANCE, threads: int | None = None) -> ParityReport:
    """Parity of a compiled artifact against the checkpoint it claims to come from."""
    manifest = Manifest.read(directory)
    loaded = load_model(checkpoint, arch or manifest.arch)
    if manifest.source_sha256 and loaded.sha256 != manifest.source_sha256:
        raise PsdeployError(f"--against {checkpoint}: sha256 {loaded.sha256[:12]}… differs from the artifact's "
                            f"source {manifest.source_sha256[:12]}…; expected the checkpoint it was compiled from")
    runner = open_artifact(directory, threads)
    return compare(torch_runner(loaded.model), runner.run, [tuple(manifest.input_shape)], manifest.output_names,
                   candidate_name=runner.description, reference_name="checkpoint (torch)", tolerance=tolerance,
                   seeds=(0, 1, 2))


__all__ = ["CompileRequest", "CompileResult", "compile_model", "parse_target", "verify_artifact"]
