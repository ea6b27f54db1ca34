"""int8 for onnxruntime: static post-training quantization to QDQ with ``onnxruntime.quantization``.

QDQ (QuantizeLinear/DequantizeLinear pairs around fp32 ops) is the format onnxruntime's CPU
provider fuses into integer kernels (QLinearConv, QLinearAdd) when it loads the file; weights
per output channel (int8), activations per tensor (uint8), MinMax calibration.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from psdeploy.backends.int8 import QuantizationRecord, tool_version
from psdeploy.calibration import CalibrationSet
from psdeploy.errors import PsdeployError
from psdeploy.export.node_names import layer_of
from psdeploy.quiet import quiet


def quantize_onnx(onnx_path: Path, output: Path, data: CalibrationSet, input_shape: tuple[int, ...]) -> QuantizationRecord:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter([{name: x} for x in data.batches(input_shape[0] or 1)])  # 1 where dynamic

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory(prefix="psdeploy-int8-") as work:
        prepared = Path(work) / "prepared.onnx"
        try:
            with quiet(""):  # the quantizer's notes on shapes and preprocessing, logged on the root logger
                quant_pre_process(str(onnx_path), str(prepared))
                quantize_static(str(prepared), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except Exception as exc:  # the quantizer raises many unrelated types
            raise PsdeployError(f"{onnx_path}: onnxruntime.quantization cannot quantize it: "
                                f"{str(exc).strip().splitlines()[0]}") from None
    return QuantizationRecord.counted(tool_version("onnxruntime"), str(onnx_path), *quantized_convs(output))


def quantized_convs(path: Path) -> tuple[list[str], list[str]]:
    """(layers of the convs whose data and weight are dequantized int8, layers of the others): the convs
    onnxruntime runs as QLinearConv, and those it runs in fp32."""
    graph = onnx.load(str(path), load_external_data=False).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    int8, float_ = [], []
    for n in graph.node:
        if n.op_type == "Conv":
            (int8 if n.input[0] in dequantized and n.input[1] in dequantized else float_).append(layer_of(n.name) or n.name)
    return int8, float_
