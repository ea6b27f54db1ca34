"""Artifact verification: a built artifact run on its backend against the checkpoint it came from.

Compile runs it on the staged artifact before moving it into place; ``psdeploy verify`` runs it on
an artifact already built.
"""

from __future__ import annotations

from pathlib import Path

from psdeploy.backends import Manifest, open_artifact
from psdeploy.backends.int8 import AccuracyGate, GateRecord
from psdeploy.calibration import CalibrationSet
from psdeploy.errors import PsdeployError
from psdeploy.load import LoadedModel, load_model
from psdeploy.parity import DEFAULT_TOLERANCE, ParityReport, Runner, compare, onnxruntime_runner, torch_runner
from psdeploy.verify.gate import accuracy_gate

DYNAMIC_BATCH_CHECKED = 3  # besides batch 1, for an artifact that runs any batch


def checked_shapes(manifest: Manifest) -> list[tuple[int, ...]]:
    """The input shapes an artifact is verified at: its own, or batch 1 and an odd batch when it runs any."""
    batch, *rest = manifest.input_shape
    return [(batch, *rest)] if batch else [(1, *rest), (DYNAMIC_BATCH_CHECKED, *rest)]


def _artifact_parity(directory: Path, manifest: Manifest, reference: Runner, reference_name: str, tolerance: float,
                     threads: int | None = None) -> ParityReport:
    """The artifact in ``directory`` run on its backend against ``reference``, at its checked shapes."""
    runner = open_artifact(directory, threads)
    return compare(reference, runner.run, checked_shapes(manifest), manifest.output_names,
                   candidate_name=runner.description, reference_name=reference_name, tolerance=tolerance,
                   seeds=(0, 1, 2))


def _fp32_reference(loaded: LoadedModel | None, onnx_path: Path) -> tuple[Runner, str]:
    """What a staged artifact is checked against: the checkpoint, or the ONNX compile was given."""
    if loaded is not None:
        return torch_runner(loaded.model), "checkpoint (torch)"
    return onnxruntime_runner(onnx_path), "source ONNX (onnxruntime)"


def verify_staged(directory: Path, loaded: LoadedModel | None, onnx_path: Path,
                  tolerance: float) -> ParityReport:
    """Compile's check of the artifact it staged: fp32 parity at its checked shapes."""
    reference, ref_name = _fp32_reference(loaded, onnx_path)
    report = _artifact_parity(directory, Manifest.read(directory), reference, ref_name, tolerance)
    report.raise_if_failed()
    return report


def gate_staged(directory: Path, loaded: LoadedModel | None, onnx_path: Path, data: CalibrationSet,
                gate: AccuracyGate) -> GateRecord:
    """Compile's check of an int8 artifact it staged: the accuracy gate against fp32."""
    reference, _ = _fp32_reference(loaded, onnx_path)
    return accuracy_gate(open_artifact(directory), reference, data, gate)


def verify_artifact(directory: Path, checkpoint: str, arch: str | None = None,
                    tolerance: float = DEFAULT_TOLERANCE, threads: int | None = None) -> ParityReport:
    """Parity of a compiled artifact against the checkpoint it claims to come from."""
    manifest = Manifest.read(directory)
    if manifest.precision == "int8":
        raise PsdeployError(f"{directory}: an int8 artifact; fp32 parity does not apply to it (its accuracy gate, "
                            f"run when it was compiled, is in its manifest; 'psdeploy accuracy' checks top-1)")
    loaded = load_model(checkpoint, arch or manifest.arch)
    if manifest.source_sha256 and loaded.sha256 != manifest.source_sha256:
        raise PsdeployError(f"--against {checkpoint}: sha256 {loaded.sha256[:12]}… differs from the artifact's "
                            f"source {manifest.source_sha256[:12]}…; expected the checkpoint it was compiled from")
    return _artifact_parity(directory, manifest, torch_runner(loaded.model), "checkpoint (torch)", tolerance,
                            threads)
