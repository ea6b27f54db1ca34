"""OpenVINO (x86 CPU): ONNX -> IR, compiled with fp32 kept.

OpenVINO's CPU plugin picks bf16 by itself on CPUs with avx512_bf16/AMX (ResNet-50 then
"runs" almost twice as fast at bf16 accuracy). Anything psdeploy calls fp32 sets
INFERENCE_PRECISION_HINT=f32, reads the hint back after compiling, and saves the IR
without fp16 compression; reduced precision only on request.
"""

from __future__ import annotations

from math import prod
from pathlib import Path

import numpy as np

from psdeploy.backends.base import Backend, BuildOptions, NodeTime, summed
from psdeploy.backends.targets import Target
from psdeploy.errors import PsdeployError
from psdeploy.export.counts import ConvKey
from psdeploy.parity.compare import Runner

WARMUP_RUNS = 5
# a precision -> the CPU plugin's OPTIMIZATION_CAPABILITIES entry that says this CPU runs it
OPTIMIZATION_CAPABILITY = {"f32": "FP32", "f16": "FP16", "bf16": "BF16", "int8": "INT8"}
CONV_TYPES = {"Convolution": 1, "GroupConvolution": 2}  # the IR's conv ops -> where the weight's reduction dims start


def inference_precision(precision: str) -> str:
    """The plugin's precision hint for an artifact's precision: an int8 model's quantized ops run int8 under
    any hint, and the rest stays fp32 (not the bf16 the plugin would pick on AMX)."""
    return "f32" if precision == "int8" else precision


def compile_config(precision: str, threads: int | None, perf_count: bool = False) -> dict[str, str]:
    config = {"INFERENCE_PRECISION_HINT": inference_precision(precision), "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    if perf_count:
        config["PERF_COUNT"] = "YES"
    return config


class OpenvinoBackend(Backend):
    name = "openvino"
    default_lowering = "sliced"  # Slices + Concat keep oneDNN's blocked layouts; each Gather costs two reorders
    # int8 (AMX Xeon, PS-ResNet-50 / ResNet-50 int8, b1): grouped 1.54x, sliced 1.92x; sliced's Slices leave
    # NNCF's FakeQuantize ops unfused (97 standalone) and its VariadicSplit runs a reference kernel
    int8_lowering = "grouped"
    module_file = "model.xml"
    uses_options = frozenset({"precision", "calibration"})
    precisions = ("f32", "f16", "bf16", "int8")  # int8: quantized by NNCF
    keeps_dynamic_batch = True  # its IR keeps the ONNX's dynamic dimensions

    def require(self) -> None:
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise PsdeployError("the openvino-cpu target needs OpenVINO: pip install 'psdeploy[openvino]'") from None

    def precisions_here(self) -> tuple[str, ...]:
        import openvino as ov

        self.require()
        capable = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        return tuple(p for p in self.precisions if OPTIMIZATION_CAPABILITY[p] in capable)

    def build(self, onnx_path: Path, input_shape: tuple[int, ...], target: Target, options: BuildOptions,
              out_dir: Path) -> dict[str, object] | None:
        import openvino as ov

        from psdeploy.backends.openvino_psconv import psconv_extension

        self.require()
        try:
            model = ov.convert_model(str(onnx_path), extension=[psconv_extension()])
        except Exception as exc:  # OpenVINO's frontends raise their own types
            raise PsdeployError(f"{onnx_path}: OpenVINO cannot convert it: {str(exc).strip().splitlines()[0]}") from None
        build_info = None
        if options.calibration is not None:
            from psdeploy.backends.openvino_int8 import quantize_model, runtime_convs

            model = quantize_model(model, options.calibration, input_shape[0] or 1, str(onnx_path))  # 1 where dynamic
            compiled, _ = self._compile(model, "int8", None, where=str(onnx_path))
            build_info = {"quantization": runtime_convs(compiled, str(onnx_path))}
        ov.save_model(model, str(out_dir / self.module_file), compress_to_fp16=False)
        return build_info

    def _compile(self, model: Path | object, precision: str, threads: int | None, perf_count: bool = False,
                 where: str | None = None):
        """(compiled model, what it runs as) of an IR file or a model in memory: the precision is read back, and
        must be the one asked for."""
        import openvino as ov

        self.require()
        where = where or str(model)
        source = str(model) if isinstance(model, Path) else model
        try:
            compiled = ov.Core().compile_model(source, "CPU", compile_config(precision, threads, perf_count))
        except Exception as exc:
            raise PsdeployError(f"{where}: OpenVINO cannot compile it: {str(exc).strip().splitlines()[0]}") from None
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        actual = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        if actual != inference_precision(precision):
            raise PsdeployError(f"{where}: OpenVINO compiled it at {actual}, not the {precision} asked for")
        return compiled, f"openvino-cpu ({precision})"

    def conv_keys(self, module: Path) -> dict[str, ConvKey]:
        """From the IR: each Convolution and GroupConvolution by its name (the ONNX node's, which the
        plugin's per-node counters keep), its output and its multiply-adds per output value."""
        import openvino as ov

        self.require()
        keys = {}
        for op in ov.Core().read_model(str(module)).get_ordered_ops():
            if op.get_type_name() in CONV_TYPES:
                _, c, h, w = op.get_output_partial_shape(0).to_shape()
                weight = op.get_input_partial_shape(1).to_shape()  # OIHW, or GOIHW for a grouped conv
                keys[op.get_friendly_name()] = ConvKey(c, h, w, prod(weight[CONV_TYPES[op.get_type_name()]:]))
        return keys

    def open(self, module: Path, target: Target, threads: int | None = None,
             precision: str = "f32") -> tuple[Runner, str]:
        compiled, runs_on = self._compile(module, precision, threads)
        request = compiled.create_infer_request()
        outputs = compiled.outputs

        def run(x: np.ndarray) -> list[np.ndarray]:
            result = request.infer({0: x})
            return [np.asarray(result[o]) for o in outputs]

        return run, runs_on

    def profile(self, module: Path, target: Target, x: np.ndarray, runs: int,
                threads: int | None = None, precision: str = "f32") -> tuple[list[NodeTime], str]:
        """OpenVINO's per-node counters: node, its type, the kernel it ran (e.g. ``brgconv_avx2_f32``)."""
        compiled, runs_on = self._compile(module, precision, threads, perf_count=True)
        request = compiled.create_infer_request()
        for _ in range(WARMUP_RUNS):
            request.infer({0: x})
        totals: dict[tuple[str, str, str], list[float]] = {}
        for _ in range(runs):
            request.infer({0: x})
            for info in request.profiling_info:
                if info.status.name != "EXECUTED":
                    continue
                key = (info.node_name, info.node_type, info.exec_type)
                totals.setdefault(key, []).append(info.real_time.total_seconds() * 1e3)
        return summed([NodeTime(node, op, kernel, sum(v) / runs, len(v) / runs)
                       for (node, op, kernel), v in totals.items()]), runs_on
