"""Export step: loaded checkpoint -> rewritten deploy model -> verified ONNX file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from psdeploy.arch.registry import default_input_shape, odd_sizes
from psdeploy.bounds import check_memory
from psdeploy.errors import PsdeployError
from psdeploy.export.counts import GraphCounts, count_graph, count_torch
from psdeploy.export.onnx_export import DEFAULT_OPSET, export_to_file
from psdeploy.fileio import atomic_output, check_destination
from psdeploy.load.loader import LoadedModel
from psdeploy.rewrite.deploy import DeployResult, rewrite
from psdeploy.verify.parity import DEFAULT_TOLERANCE, ParityReport, compare
from psdeploy.verify.runners import onnxruntime_runner, torch_runner


@dataclass
class ExportResult:
    path: Path
    deploy: DeployResult
    input_shape: tuple[int, ...]
    output_names: list[str]
    rewrite_parity: ParityReport  # deploy model (PyTorch) vs checkpoint, several sizes
    onnx_parity: ParityReport  # ONNX in onnxruntime vs checkpoint
    graph: GraphCounts
    released_params: int
    released_macs: int
    search: list[dict[str, object]] | None = None  # --lowering auto: per-geometry timings and choice


def shape_from_text(text: str, option: str = "--input-shape") -> tuple[int, ...]:
    """``"N,C,H,W"`` -> a tuple of 4 positive integers that fits in memory, or a one-line error naming ``option``."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise PsdeployError(f"{option} {text!r}: expected N,C,H,W as 4 positive integers, e.g. 1,3,224,224")
    check_memory(f"{option} {text}", shape)
    return shape


def parse_shape(text: str | None, loaded: LoadedModel) -> tuple[int, ...]:
    if text is None:
        return default_input_shape(loaded.config)
    shape = shape_from_text(text)
    if shape[1] != loaded.config.in_chans:
        raise PsdeployError(f"--input-shape {text!r}: expected N,C,H,W with C={loaded.config.in_chans}, "
                            f"e.g. 1,{loaded.config.in_chans},224,224")
    return shape


METADATA_PREFIX = "psdeploy."
AUTO = "auto"
DEFAULT_LOWERING = "grouped"


def stamp_metadata(model: onnx.ModelProto, loaded: LoadedModel, lowering: str, shape: tuple[int, ...],
                   dynamic_batch: bool) -> None:
    """Record where the graph came from, so compile can refuse ONNX that psdeploy did not verify."""
    values = {"arch": loaded.arch, "lowering": lowering, "source": loaded.source, "source_sha256": loaded.sha256,
              "input_shape": ",".join(map(str, shape)), "dynamic_batch": str(dynamic_batch).lower()}
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, value


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key.removeprefix(METADATA_PREFIX): p.value for p in model.metadata_props
            if p.key.startswith(METADATA_PREFIX)}


def verify_rewrite(loaded: LoadedModel, deploy: DeployResult, shape: tuple[int, ...],
                   tolerance: float = DEFAULT_TOLERANCE) -> ParityReport:
    """Deploy model vs checkpoint in PyTorch at ``shape`` and at odd sizes (all stride-2 blocks see odd inputs)."""
    return compare(
        torch_runner(loaded.model), torch_runner(deploy.model), [shape, *odd_sizes(shape)],
        loaded.model.output_names, candidate_name=f"rewrite[{deploy.lowering}] (torch)",
        reference_name="checkpoint (torch)", tolerance=tolerance,
    )


def export_onnx(
    loaded: LoadedModel,
    output: str | Path,
    lowering: str = "grouped",
    input_shape: tuple[int, ...] | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    choices: dict[str, str] | None = None,
    search: list[dict[str, object]] | None = None,
) -> ExportResult:
    """Rewrite, export and verify; the file exists at ``output`` only if every check passed.

    ``lowering='auto'`` needs ``choices`` (layer -> lowering) and the ``search`` rows that chose them:
    the search times candidates on a backend, a layer above this one.
    """
    output = Path(output)
    check_destination(output, "-o")
    shape = input_shape or default_input_shape(loaded.config)
    if lowering == AUTO and choices is None:
        raise PsdeployError("--lowering auto: the per-layer choices of a lowering search are needed")
    deploy = rewrite(loaded.model, DEFAULT_LOWERING if lowering == AUTO else lowering, choices)
    deploy.lowering = lowering
    rewrite_parity = verify_rewrite(loaded, deploy, shape, tolerance)
    rewrite_parity.raise_if_failed()
    names = loaded.model.output_names
    with atomic_output(output) as tmp:
        export_to_file(deploy.model, tmp, shape, names, opset, dynamic_batch)
        shapes = [shape, (2 * shape[0] + 1, *shape[1:])] if dynamic_batch else [shape]
        onnx_parity = compare(
            torch_runner(loaded.model), onnxruntime_runner(tmp), shapes, names,
            candidate_name=f"onnx[{lowering}] (onnxruntime)", reference_name="checkpoint (torch)",
            tolerance=tolerance, seeds=(0, 1, 2),
        )
        onnx_parity.raise_if_failed()
        model = onnx.load(str(tmp))
        stamp_metadata(model, loaded, lowering, shape, dynamic_batch)
        onnx.save(model, str(tmp))
        graph = count_graph(model)
    released_params, released_macs = count_torch(loaded.model, shape)
    return ExportResult(output, deploy, shape, names, rewrite_parity, onnx_parity, graph,
                        released_params, released_macs, search)


__all__ = ["AUTO", "DEFAULT_LOWERING", "DEFAULT_OPSET", "ExportResult", "export_onnx", "parse_shape", "shape_from_text", "read_metadata", "verify_rewrite"]
