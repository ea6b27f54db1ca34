"""An int8 TVM build's front half: the verified ONNX quantized to QDQ, and the record of its integer convs.

The quantizer is onnxruntime's, with the settings its own int8 artifacts use (``onnxruntime_int8.py``),
PSConv nodes kept and quantized as convs; what runs int8 is then decided by TVM's side, the QDQ pass
(``qdq.py``), which turns a conv into an integer conv only where its data and weight match what it
can compute exactly. Its per-conv verdicts, in graph order, are named here by the ONNX nodes' layers.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from psdeploy.backends.int8 import QuantizationRecord, tool_version
from psdeploy.backends.onnxruntime_int8 import CONV_TYPES, quantize_onnx
from psdeploy.backends.tvm.qdq import IntegerConvs
from psdeploy.calibration import CalibrationSet
from psdeploy.errors import PsdeployError
from psdeploy.export.node_names import layer_of

TOOL = "onnxruntime {} QDQ + psdeploy integer convs"


def quantize_for_tvm(onnx_path: Path, output: Path, data: CalibrationSet, input_shape: tuple[int, ...]) -> None:
    """Write the QDQ graph TVM imports to ``output`` (PSConv nodes kept as such)."""
    quantize_onnx(onnx_path, output, data, input_shape, keep_psconv=True)


def integer_conv_record(qdq_path: Path, convs: IntegerConvs, where: str) -> QuantizationRecord:
    """The record of the convs the QDQ pass made integer, by layer; none is an error (``counted``)."""
    graph = onnx.load(str(qdq_path), load_external_data=False).graph
    names = [layer_of(n.name) or n.name for n in graph.node if n.op_type in CONV_TYPES]
    if len(names) != len(convs.int8):
        raise PsdeployError(f"{where}: TVM imported {len(convs.int8)} convs from the quantized graph's "
                            f"{len(names)}; expected one per Conv/PSConv node")
    int8 = [name for name, done in zip(names, convs.int8) if done]
    float_ = [name for name, done in zip(names, convs.int8) if not done]
    version = tool_version("onnxruntime").split()[-1]
    return QuantizationRecord.counted(TOOL.format(version), where, int8, float_)
