"""int8 for OpenVINO: NNCF's post-training quantization of the converted model.

NNCF inserts FakeQuantize operations; the CPU plugin's low-precision transformations turn the
convs behind them into u8/i8 kernels when it compiles. Whether a conv really runs int8 is read
from the compiled model itself (its runtime precision), not assumed from the IR.
"""

from __future__ import annotations

from psdeploy.backends.int8 import QuantizationRecord, tool_version
from psdeploy.calibration import CalibrationSet
from psdeploy.errors import PsdeployError
from psdeploy.export.node_names import layer_of
from psdeploy.quiet import quiet

INT8_TYPES = frozenset({"u8", "i8"})


def quantize_model(model, data: CalibrationSet, batch: int, where: str):
    """The OpenVINO model with NNCF's FakeQuantize operations, calibrated on ``data.calibrate`` fed ``batch``
    samples at a time (the model's own batch)."""
    try:
        import nncf
    except ImportError:
        raise PsdeployError("--precision int8 on openvino-cpu needs NNCF: pip install 'psdeploy[openvino]'") from None
    batches = data.batches(batch)
    try:
        with quiet("nncf"):  # its progress bars and notes
            return nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))  # items, not samples
    except Exception as exc:  # NNCF raises many unrelated types
        raise PsdeployError(f"{where}: NNCF cannot quantize it: {str(exc).strip().splitlines()[0]}") from None


def runtime_convs(compiled, where: str) -> QuantizationRecord:
    """The record of a compiled model's convs: int8 where the plugin runs them on u8/i8 data."""
    int8, float_ = [], []
    for node in compiled.get_runtime_model().get_ops():
        info = node.get_rt_info()
        if info["layerType"].astype(str) == "Convolution":
            name = node.get_friendly_name()
            (int8 if info["runtimePrecision"].astype(str) in INT8_TYPES else float_).append(layer_of(name) or name)
    return QuantizationRecord.counted(tool_version("nncf"), where, int8, float_)
