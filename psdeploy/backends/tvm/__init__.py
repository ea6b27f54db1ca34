"""Apache TVM (Relax; llvm and cuda): MetaSchedule-tuned modules, the fused PSConv kernel, Winograd.

The only backend that compiles ``ai.psdeploy::PSConv`` as one computation; elsewhere that
node runs its ONNX function body. CUDA modules build anywhere nvcc is and run only where
an NVIDIA GPU is visible.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from psdeploy.backends.base import Backend, BuildOptions, NodeTime, summed
from psdeploy.backends.targets import Target
from psdeploy.backends.tvm.host import cannot_run_here, host_cpu_flags
from psdeploy.errors import PsdeployError
from psdeploy.rewrite.lowerings.fused_op import OP_NAME
from psdeploy.parity.compare import Runner

WINOGRAD_TILES = {"off": 0, "f2": 2, "f4": 4}
WARMUP_RUNS = 3


INT8_FEATURE = "avx512vnni"  # the int8 kernels' vpdpbusd (LLVM's name, and Linux's without its underscore)


def check_int8(target: Target, options: BuildOptions) -> None:
    """int8 builds only where their kernels run: a CPU target with AVX512-VNNI, convs blocked, no Winograd."""
    if target.device != "cpu":
        raise PsdeployError(f"--precision int8: TVM's int8 kernels are built for CPUs; --target {target.name} "
                            f"builds f32 (expected --target llvm)")
    import tvm
    from tvm.target import codegen

    if not codegen.target_has_features(INT8_FEATURE, tvm.target.Target(target.tvm_target)):
        cpu = target.tvm_target.get("mcpu") or "generic"
        raise PsdeployError(f"--precision int8: TVM's int8 kernels need AVX512-VNNI, which the target's CPU {cpu} "
                            f"lacks (expected an --mcpu that has it, e.g. znver4, icelake-server, sapphirerapids)")
    if options.layout not in (None, "nchwc") or options.winograd != "off":
        given = f"--layout {options.layout}" if options.layout not in (None, "nchwc") else f"--winograd {options.winograd}"
        raise PsdeployError(f"{given}: TVM's int8 convs are built in NCHW{{16}}c, direct; expected --precision "
                            f"int8 without it")


class TvmBackend(Backend):
    name = "tvm"
    module_file = "module.so"
    native_ops = frozenset({OP_NAME})
    # one kernel per PSConv layer, no Gathers: the fastest whole-network form on TVM as measured, and the form
    # the committed tuning databases (reports/tuning-db) were tuned in, so a build with no budget finds its tasks
    default_lowering = "fused"
    uses_options = frozenset({"precision", "calibration", "winograd", "layout", "tune_trials", "tune_time_s",
                              "untuned", "rpc", "tuning_db"})
    # int8 (llvm, AVX512-VNNI): onnxruntime's QDQ graph, its convs made integer kernels (tvm/quantized.py, qdq.py)
    precisions = ("f32", "int8")

    def precisions_here(self) -> tuple[str, ...]:
        """int8 where this CPU has AVX512-VNNI (the int8 kernels' instruction)."""
        flags = host_cpu_flags()
        return self.precisions if flags is None or INT8_FEATURE in flags else ("f32",)

    def require(self) -> None:
        try:
            import tvm  # noqa: F401
            from tvm import relax  # noqa: F401
        except ImportError as exc:
            raise PsdeployError(f"the TVM backend needs Apache TVM: pip install 'psdeploy[tvm]' "
                                f"({exc.__class__.__name__}: {exc})") from None

    def check_options(self, target: Target, options: BuildOptions) -> None:
        super().check_options(target, options)
        self.layout(target, options)  # refuses a layout the Winograd convs cannot take
        if options.precision == "int8":
            self.require()
            check_int8(target, options)
        if options.tunes and options.rpc is None and (reason := cannot_run_here(target)):
            machine = "an NVIDIA GPU" if target.device == "cuda" else "a CPU that has them"
            raise PsdeployError(f"--target {target.name} with a tuning budget: candidates are measured here and "
                                f"{reason}; measure them on {machine} with --rpc HOST:PORT --rpc-key KEY, "
                                f"or build from a tuned --tuning-db with no budget")

    def layout(self, target: Target, options: BuildOptions) -> str:
        return str(self.conv_layout(target, options))

    def conv_layout(self, target: Target, options: BuildOptions):
        from psdeploy.backends.tvm.layout import resolve_layout

        return resolve_layout(options.layout, target, WINOGRAD_TILES[options.winograd])

    def build(self, onnx_path: Path, input_shape: tuple[int, ...], target: Target, options: BuildOptions,
              out_dir: Path) -> dict[str, object] | None:
        from psdeploy.backends.tvm.build import build

        self.require()
        layout, tile = self.conv_layout(target, options), WINOGRAD_TILES[options.winograd]
        if options.calibration is None:
            summary, kernels = build(onnx_path, input_shape, target, options, out_dir / self.module_file, tile,
                                     layout, self.default_lowering)
            return {"tuning": summary, "kernels": kernels}
        from psdeploy.backends.tvm.qdq import IntegerConvs
        from psdeploy.backends.tvm.quantized import integer_conv_record, quantize_for_tvm

        with tempfile.TemporaryDirectory(prefix="psdeploy-tvm-int8-") as work:
            qdq = Path(work) / "qdq.onnx"
            quantize_for_tvm(onnx_path, qdq, options.calibration, input_shape)
            convs = IntegerConvs()
            summary, kernels = build(qdq, input_shape, target, options, out_dir / self.module_file, tile, layout,
                                     self.default_lowering, convs)
            return {"tuning": summary, "kernels": kernels,
                    "quantization": integer_conv_record(qdq, convs, str(onnx_path))}

    def _vm(self, module: Path, target: Target, threads: int | None):
        """The module's VM, and what it runs as: on CPU with the threads TVM's runtime really started
        (``threads``, else the target's num-cores; read once, when its thread pool starts, so a process
        that already ran TVM kernels keeps its count, and the description says so)."""
        threads = threads or target.threads
        if threads:
            os.environ["TVM_NUM_THREADS"] = str(threads)  # read when the runtime's thread pool starts
        self.require()
        import tvm
        from tvm import relax

        if reason := cannot_run_here(target):
            raise PsdeployError(f"{module.parent}: built for {target.label} and {reason}; run it on the machine "
                                f"it was built for")
        device = tvm.cuda(0) if target.device == "cuda" else tvm.cpu(0)
        try:
            library = tvm.runtime.load_module(str(module))
        except Exception as exc:  # a corrupt or foreign shared library
            raise PsdeployError(f"{module}: not a loadable TVM module ({str(exc).strip().splitlines()[-1]})") from None
        vm = relax.VirtualMachine(library, device)
        if target.device == "cuda":
            return vm, device, target.label
        running = int(tvm.get_global_func("runtime.NumThreads")())
        return vm, device, f"{target.label} ({running} thread{'s' if running != 1 else ''})"

    def open(self, module: Path, target: Target, threads: int | None = None,
             precision: str = "f32") -> tuple[Runner, str]:
        import tvm

        vm, device, runs_on = self._vm(module, target, threads)
        main = vm["main"]

        def run(x: np.ndarray) -> list[np.ndarray]:
            out = main(tvm.runtime.tensor(x, device))
            outs = out if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else [out]
            return [np.asarray(o.numpy()) for o in outs]

        return run, runs_on

    def profile(self, module: Path, target: Target, x: np.ndarray, runs: int,
                threads: int | None = None, precision: str = "f32") -> tuple[list[NodeTime], str]:
        """Each call the Relax VM makes (one fused TIR kernel, or a VM builtin), timed by the VM's own
        instrumentation hook, the device synchronised after each call."""
        import tvm

        vm, device, runs_on = self._vm(module, target, threads)
        data = tvm.runtime.tensor(x, device)
        for _ in range(WARMUP_RUNS):
            vm["main"](data)
        started: dict[str, float] = {}
        totals: dict[str, list[float]] = {}

        def instrument(func, symbol: str, before_run: bool, ret_value, *args) -> int:
            if before_run:
                started[symbol] = time.perf_counter()
            else:
                device.sync()
                totals.setdefault(symbol, []).append((time.perf_counter() - started.pop(symbol)) * 1e3)
            return 0  # run the call as usual

        vm.set_instrument(instrument)
        for _ in range(runs):
            vm["main"](data)
        return summed([NodeTime(symbol, "builtin" if symbol.startswith("vm.builtin") else "kernel", symbol,
                                sum(v) / runs, len(v) / runs) for symbol, v in totals.items()]), runs_on
