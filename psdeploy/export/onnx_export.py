"""PyTorch deploy model -> ONNX file.

opset >= 18 uses torch's dynamo exporter (the maintained one); an older opset,
which that exporter cannot down-convert for these graphs, uses the TorchScript
exporter. Callers write to a temporary path (``psdeploy.fileio``) and move it into place.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from psdeploy.bounds import OPSET
from psdeploy.errors import PsdeployError
from psdeploy.quiet import quiet

DEFAULT_OPSET = 18
INPUT_NAME = "input"
EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")


def export_to_file(
    model: nn.Module,
    path: Path,
    input_shape: tuple[int, ...],
    output_names: list[str],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
) -> None:
    """Export ``model`` for inputs of ``input_shape`` (batch dim dynamic if asked) to ``path``."""
    OPSET.check(opset)
    from psdeploy.export.node_names import name_nodes_by_module
    from psdeploy.export.psconv_onnx import define_psconv_functions, translation_table
    from psdeploy.rewrite.lowerings.fused import FusedPSConv

    if opset < 18 and any(isinstance(m, FusedPSConv) for m in model.modules()):
        raise PsdeployError(f"--opset {opset}: the fused lowering's PSConv node needs the opset >= 18 exporter")
    example = (torch.randn(*input_shape),)
    model = model.eval()
    with quiet(*EXPORTER_LOGGERS), torch.no_grad():
        if opset >= 18:
            shapes = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
            program = torch.onnx.export(
                model, example, None, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=output_names, dynamic_shapes=shapes, optimize=True, verbose=False,
                custom_translation_table=translation_table(),
            )
            onnx_model = program.model_proto
            define_psconv_functions(onnx_model)
            name_nodes_by_module(onnx_model)
            onnx.save(onnx_model, str(path))
        else:
            axes = {n: {0: "batch"} for n in [INPUT_NAME, *output_names]} if dynamic_batch else None
            torch.onnx.export(
                model, example, str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=output_names, dynamic_axes=axes, do_constant_folding=True,
            )
