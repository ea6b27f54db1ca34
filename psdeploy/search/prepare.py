"""One torch module -> a ready-to-time callable on a target, verified before it is timed.

Every backend gets the same exported ONNX graph (TVM and OpenVINO compile it, onnxruntime
runs it), so a backend's ratios compare like with like; torch eager runs the module itself.
Used by the lowering search and the reports.
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

from psdeploy.backends import BuildOptions, BuiltModule, Target, build_module
from psdeploy.bench.timing import Opener
from psdeploy.bounds import DEFAULT_TOLERANCE
from psdeploy.export.onnx_export import export_to_file
from psdeploy.parity.compare import ParityReport, Runner, compare, make_input
from psdeploy.parity.runners import torch_runner


@dataclass
class Prepared:
    """One case on a backend, with the parity it showed against torch: ``open()`` loads it anew (a compiled
    model's new load: its own graph and buffers) and returns a call that runs it on the case's input."""

    open: Opener
    parity: ParityReport


def on_input(run: Runner, shape: tuple[int, ...]) -> Callable[[], object]:
    """``run`` as a call on the case's seeded input of ``shape``."""
    x = make_input(shape, seed=0)
    return lambda: run(x)


def export_case(module: nn.Module, shape: tuple[int, ...], directory: Path) -> Path:
    """``module`` as ONNX in a fresh file under ``directory`` (one export serves every ONNX backend)."""
    path = Path(tempfile.mkdtemp(prefix="case-", dir=directory)) / "case.onnx"
    export_to_file(module.eval(), path, shape, ["y"])
    return path


def check_parity(run: Runner, reference: nn.Module, shape: tuple[int, ...], label: str,
                 tolerance: float) -> ParityReport:
    parity = compare(torch_runner(reference.eval()), run, [shape], ["y"], candidate_name=label,
                     reference_name="torch reference", tolerance=tolerance, seeds=(0,))
    parity.raise_if_failed()
    return parity


def build_on_target(module: nn.Module, shape: tuple[int, ...], target: Target, options: BuildOptions,
                    directory: Path, onnx_path: Path | None = None) -> BuiltModule:
    """Export ``module`` (unless ``onnx_path`` is given) and build it for ``target`` under ``directory``, which
    must outlive every load of it; unchecked."""
    onnx_path = onnx_path or export_case(module, shape, directory)
    return build_module(onnx_path, shape, target, options, Path(tempfile.mkdtemp(prefix="built-", dir=directory)))


def prepare_on_target(module: nn.Module, reference: nn.Module, shape: tuple[int, ...], target: Target,
                      options: BuildOptions, threads: int, name: str, directory: Path,
                      tolerance: float = DEFAULT_TOLERANCE, onnx_path: Path | None = None) -> Prepared:
    """``module`` built for ``target`` (``build_on_target``), its first load checked against ``reference`` at fp32
    parity; each later load is the same build opened anew."""
    built = build_on_target(module, shape, target, options, directory, onnx_path)
    first = built.open(threads)
    parity = check_parity(first.run, reference, shape, f"{name} on {first.description}", tolerance)
    return Prepared(lambda: on_input(built.open(threads).run, shape), parity)


def prepare_eager(module: nn.Module, reference: nn.Module, shape: tuple[int, ...], threads: int, name: str,
                  tolerance: float = DEFAULT_TOLERANCE) -> Prepared:
    """``module`` in PyTorch eager mode (the paper's own baseline runtime)."""
    torch.set_num_threads(threads)
    module = module.eval()

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(torch.from_numpy(x))
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    parity = check_parity(run, reference, shape, f"{name} on torch", tolerance)
    on_case_input = on_input(run, shape)
    return Prepared(lambda: on_case_input, parity)  # eager PyTorch has no compiled load to redo


def set_threads(threads: int) -> None:
    """Pin every runtime we drive to ``threads`` (OpenMP-based ones read these at start)."""
    for var in ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
