"""One torch module -> a ready-to-time callable on each backend, verified before timing.

Every backend gets the same exported ONNX graph (TVM and OpenVINO compile it, onnxruntime
runs it), so a backend's ratios compare like with like; torch eager runs the module itself.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from psdeploy.errors import PsdeployError
from psdeploy.export.onnx_export import export_to_file
from psdeploy.verify.parity import ParityReport, compare
from psdeploy.verify.runners import onnxruntime_session, torch_runner

# "-wino2"/"-wino4": the same TVM target with Winograd F(2x2,3x3)/F(4x4,3x3) for every eligible conv
BACKENDS = ("torch", "onnxruntime", "openvino", "tvm-llvm", "tvm-cuda",
            "tvm-llvm-wino2", "tvm-llvm-wino4", "tvm-cuda-wino2", "tvm-cuda-wino4")


def is_tvm(backend: str) -> bool:
    return backend.startswith("tvm-")


def tvm_variant(backend: str) -> tuple[str, int]:
    """(target name, Winograd tile or 0) of a TVM backend name such as ``tvm-llvm-wino4``."""
    _, target, *wino = backend.split("-")
    return target, int(wino[0].removeprefix("wino")) if wino else 0


@dataclass
class Prepared:
    """A backend's callable for one case, with the parity it showed against torch."""

    run: Callable[[], object]
    parity: ParityReport


def _torch_call(module: nn.Module, x: np.ndarray, threads: int) -> Callable[[], object]:
    torch.set_num_threads(threads)
    xt = torch.from_numpy(x)

    def call() -> object:
        with torch.inference_mode():
            return module(xt)

    return call


def _onnx_runner(path: Path, backend: str, threads: int, shape: tuple[int, ...], tvm_trials: int,
                 tvm_db: Path, work: Path):
    """(runner over np arrays) for the ONNX at ``path`` on ``backend``."""
    if backend == "onnxruntime":
        session = onnxruntime_session(path, threads)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})
    if backend == "openvino":
        from psdeploy.compile.openvino_backend import convert, load_runner
        from psdeploy.compile.targets import require_openvino

        require_openvino()
        xml = work / "model.xml"
        convert(path, xml)
        run, actual = load_runner(xml, "f32", threads)
        if actual != "f32":
            raise PsdeployError(f"OpenVINO ran at {actual}, not f32: refusing to report it as fp32")
        return run
    if backend in BACKENDS and is_tvm(backend):
        from psdeploy.compile.targets import parse_target
        from psdeploy.compile.tvm_backend import build, load_runner

        target, tile = tvm_variant(backend)
        spec = parse_target(target, cores=threads)
        module = work / "module.so"
        build(path, shape, spec, tvm_db, tvm_trials, module, winograd_tile=tile)
        return load_runner(module, spec, threads)
    raise PsdeployError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def export_case(module: nn.Module, shape: tuple[int, ...]) -> Path:
    """``module`` as ONNX in a fresh temporary directory (one export serves every ONNX backend)."""
    path = Path(tempfile.mkdtemp(prefix="psdeploy-report-")) / "case.onnx"
    export_to_file(module.eval(), path, shape, ["y"])
    return path


def prepare(module: nn.Module, reference: nn.Module, shape: tuple[int, ...], backend: str, threads: int,
            name: str, tvm_trials: int = 0, tvm_db: Path = Path("tuning-db"), tolerance: float = 1e-4,
            onnx_path: Path | None = None) -> Prepared:
    """Build ``module`` on ``backend`` (exporting it unless ``onnx_path`` is given), check it against
    ``reference``."""
    module, reference = module.eval(), reference.eval()
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    outputs = ["y"]
    if backend == "torch":
        run = torch_runner(module)
        call = _torch_call(module, x, threads)
    else:
        onnx_path = onnx_path or export_case(module, shape)
        work = Path(tempfile.mkdtemp(prefix="psdeploy-report-"))
        run = _onnx_runner(onnx_path, backend, threads, shape, tvm_trials, tvm_db, work)
        call = lambda: run(x)  # noqa: E731
    parity = compare(torch_runner(reference), run, [shape], outputs, candidate_name=f"{name} on {backend}",
                     reference_name="torch reference", tolerance=tolerance, seeds=(0,))
    parity.raise_if_failed()
    return Prepared(call, parity)


def set_threads(threads: int) -> None:
    """Pin every runtime we drive to ``threads`` (OpenMP-based ones read these at start)."""
    for var in ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
