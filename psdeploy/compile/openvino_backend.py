"""ONNX -> OpenVINO IR, compiled for CPU with fp32 kept.

OpenVINO's CPU plugin picks bf16 by itself on CPUs with avx512_bf16/AMX
(toolchain-facts: ResNet-50 then "runs" in 10.4 ms instead of 18.9 ms at bf16
accuracy). Anything psdeploy calls fp32 sets INFERENCE_PRECISION_HINT=f32 and saves
the IR without fp16 compression; reduced precision only on request.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from psdeploy.errors import PsdeployError
from psdeploy.verify.parity import Runner

XML_FILE = "model.xml"
PRECISIONS = {"f32": "f32", "f16": "f16", "bf16": "bf16"}


def convert(onnx_path: Path, out_xml: Path) -> None:
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(out_xml), compress_to_fp16=False)


def compile_config(precision: str, threads: int | None) -> dict[str, str]:
    if precision not in PRECISIONS:
        raise PsdeployError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return config


def load_runner(xml: Path, precision: str = "f32", threads: int | None = None) -> tuple[Runner, str]:
    """A runner and the precision OpenVINO actually chose (read back, not assumed)."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(xml), "CPU", compile_config(precision, threads))
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    actual = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    request = compiled.create_infer_request()
    outputs = compiled.outputs

    def run(x: np.ndarray) -> list[np.ndarray]:
        result = request.infer({0: x})
        return [np.asarray(result[o]) for o in outputs]

    return run, actual
