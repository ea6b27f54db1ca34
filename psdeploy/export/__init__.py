"""Export step: loaded checkpoint -> rewritten deploy model -> verified ONNX file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from psdeploy.arch.registry import default_input_shape, odd_sizes
from psdeploy.bounds import check_memory
from psdeploy.errors import PsdeployError
from psdeploy.export.counts import GraphCounts, count_graph, count_torch
from psdeploy.export.onnx_export import DEFAULT_OPSET, export_to_file
from psdeploy.export.record import ExportRecord, SearchRow, read_export_record
from psdeploy.fileio import atomic_output, check_destination
from psdeploy.load.loader import LoadedModel
from psdeploy.rewrite.deploy import DeployResult, rewrite
from psdeploy.parity.compare import DEFAULT_TOLERANCE, ParityReport, compare
from psdeploy.parity.runners import onnxruntime_runner, torch_runner


@dataclass
class ExportResult:
    path: Path
    record: ExportRecord  # what the file's metadata says it is
    deploy: DeployResult
    output_names: list[str]
    rewrite_parity: ParityReport  # deploy model (PyTorch) vs checkpoint, several sizes
    onnx_parity: ParityReport  # ONNX in onnxruntime vs checkpoint
    graph: GraphCounts
    released_params: int
    released_macs: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.record.input_shape

    @property
    def search(self) -> list[SearchRow] | None:  # --lowering auto: per-geometry timings and choice
        return self.record.search


def input_shape_of(value: str | Sequence[int], option: str = "--input-shape") -> tuple[int, ...]:
    """``"N,C,H,W"`` or a sequence of 4 positive integers -> a tuple that fits in memory, or a one-line error
    naming ``option``."""
    try:
        shape = tuple(int(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise PsdeployError(f"{option} {value!r}: expected N,C,H,W as 4 positive integers, e.g. 1,3,224,224")
    check_memory(f"{option} {','.join(map(str, shape))}", shape)
    return shape


def parse_shape(value: str | Sequence[int] | None, loaded: LoadedModel) -> tuple[int, ...]:
    """The input shape asked for (default: the architecture's), with the model's input channels."""
    if value is None:
        return default_input_shape(loaded.config)
    shape = input_shape_of(value)
    if shape[1] != loaded.config.in_chans:
        raise PsdeployError(f"--input-shape {value!r}: expected N,C,H,W with C={loaded.config.in_chans}, "
                            f"e.g. 1,{loaded.config.in_chans},224,224")
    return shape


AUTO = "auto"
DEFAULT_LOWERING = "grouped"


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
    search: list[SearchRow] | None = None,
    force: bool = False,
) -> ExportResult:
    """Rewrite, export and verify; the file exists at ``output`` only if every check passed.

    ``lowering='auto'`` needs ``choices`` (layer -> lowering) and the ``search`` rows that chose them:
    the search times candidates on a backend, a layer above this one. An existing ``output`` is refused unless
    ``force`` (``psdeploy.fileio``'s rule).
    """
    output = Path(output)
    check_destination(output, "-o", force=force)
    shape = input_shape or default_input_shape(loaded.config)
    if lowering == AUTO and choices is None:
        raise PsdeployError("--lowering auto: the per-layer choices of a lowering search are needed")
    deploy = rewrite(loaded.model, DEFAULT_LOWERING if lowering == AUTO else lowering, choices)
    deploy.lowering = lowering
    rewrite_parity = verify_rewrite(loaded, deploy, shape, tolerance)
    rewrite_parity.raise_if_failed()
    names = loaded.model.output_names
    with atomic_output(output, "-o", force=force) as tmp:
        export_to_file(deploy.model, tmp, shape, names, opset, dynamic_batch)
        shapes = [shape, (2 * shape[0] + 1, *shape[1:])] if dynamic_batch else [shape]
        onnx_parity = compare(
            torch_runner(loaded.model), onnxruntime_runner(tmp), shapes, names,
            candidate_name=f"onnx[{lowering}] (onnxruntime)", reference_name="checkpoint (torch)",
            tolerance=tolerance, seeds=(0, 1, 2),
        )
        onnx_parity.raise_if_failed()
        record = ExportRecord(arch=loaded.arch, lowering=lowering, choices=choices if lowering == AUTO else None,
                              search=search, input_shape=tuple(shape), dynamic_batch=dynamic_batch, source=loaded.source,
                              source_sha256=loaded.sha256, opset=opset, preprocess=loaded.config.preprocess)
        model = onnx.load(str(tmp))
        record.stamp(model)  # where the graph came from: compile refuses ONNX that psdeploy did not verify
        onnx.save(model, str(tmp))
        graph = count_graph(model)
    released_params, released_macs = count_torch(loaded.model, shape)
    return ExportResult(output, record, deploy, names, rewrite_parity, onnx_parity, graph,
                        released_params, released_macs)


__all__ = ["AUTO", "DEFAULT_LOWERING", "DEFAULT_OPSET", "ExportRecord", "ExportResult", "SearchRow", "export_onnx",
           "input_shape_of", "parse_shape", "read_export_record", "verify_rewrite"]
