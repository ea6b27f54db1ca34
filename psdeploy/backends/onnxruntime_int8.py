"""int8 for onnxruntime: static post-training quantization to QDQ with ``onnxruntime.quantization``.

QDQ (QuantizeLinear/DequantizeLinear pairs around fp32 ops) is the format onnxruntime's CPU
provider fuses into integer kernels (QLinearConv, QLinearAdd) when it loads the file; weights
per output channel (int8), activations per tensor (uint8), MinMax calibration.

TVM reads the same QDQ file (``backends/tvm/qdq.py``) but compiles ``ai.psdeploy::PSConv`` as one
kernel, so for it the PSConv nodes are kept (``keep_psconv``): the quantizer's preprocessing would
otherwise inline their function bodies into three masked convs, and its registry does not know the
op. They are registered with it as convs for the one call: its data and output quantized per tensor,
its packed weight per output channel (axis 0, as a conv's), its bias in int32 at data x weight scale.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from psdeploy.backends.int8 import QuantizationRecord, tool_version
from psdeploy.calibration import CalibrationSet
from psdeploy.errors import PsdeployError
from psdeploy.export.node_names import layer_of
from psdeploy.quiet import quiet
from psdeploy.rewrite.lowerings.fused_op import OP_TYPE as PSCONV

CONV_TYPES = frozenset({"Conv", PSCONV})  # ops whose data and weight, both dequantized int8, make an integer conv


def quantize_onnx(onnx_path: Path, output: Path, data: CalibrationSet, input_shape: tuple[int, ...],
                  keep_psconv: bool = False) -> QuantizationRecord:
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
            with quiet(""), psconv_as_conv(keep_psconv):  # the quantizer's notes, logged on the root logger
                quant_pre_process(str(onnx_path), str(prepared), skip_optimization=keep_psconv)
                quantize_static(str(prepared), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except Exception as exc:  # the quantizer raises many unrelated types
            raise PsdeployError(f"{onnx_path}: onnxruntime.quantization cannot quantize it: "
                                f"{str(exc).strip().splitlines()[0]}") from None
    return QuantizationRecord.counted(tool_version("onnxruntime"), str(onnx_path), *quantized_convs(output))


@contextlib.contextmanager
def psconv_as_conv(enabled: bool) -> Iterator[None]:
    """While the block runs (``enabled``), onnxruntime's QDQ quantizer quantizes PSConv nodes as it does convs."""
    if not enabled:
        yield
        return
    from onnxruntime.quantization import registry
    from onnxruntime.quantization.operators.conv import QDQConv

    class QDQPSConv(QDQConv):
        """QDQConv's quantization (data, output, per-channel weight, int32 bias) for a node it would refuse by type."""

        def quantize(self) -> None:
            node = self.node
            self.quantizer.quantize_activation_tensor(node.input[0])
            if not self.disable_qdq_for_node_output:
                self.quantizer.quantize_activation_tensor(node.output[0])
            self.quantizer.quantize_weight_tensor_per_channel(node.input[1], 0)
            self.quantizer.quantize_bias_tensor(node.name, node.input[2], node.input[0], node.input[1])

    registry.QDQRegistry[PSCONV] = QDQPSConv
    try:
        yield
    finally:
        del registry.QDQRegistry[PSCONV]


def quantized_convs(path: Path) -> tuple[list[str], list[str]]:
    """(layers of the convs whose data and weight are dequantized int8, layers of the others): the convs
    onnxruntime runs as QLinearConv (and the PSConv nodes TVM compiles as integer kernels), and those left fp32."""
    graph = onnx.load(str(path), load_external_data=False).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    int8, float_ = [], []
    for n in graph.node:
        if n.op_type in CONV_TYPES:
            (int8 if n.input[0] in dequantized and n.input[1] in dequantized else float_).append(layer_of(n.name) or n.name)
    return int8, float_
