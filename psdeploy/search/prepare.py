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

from psdeploy.backends import BuildOptions, OpenedRunner, Target, build_and_open
from psdeploy.bounds import DEFAULT_TOLERANCE
from psdeploy.export.onnx_export import export_to_file
from psdeploy.parity.compare import ParityReport, Runner, compare, make_input
from psdeploy.parity.runners import torch_runner


@dataclass
class Prepared:
    """A backend's callable for one case, with the parity it showed against torch."""

    run: Callable[[], object]
    parity: ParityReport


def export_case(module: nn.Module, shape: tuple[int, ...], directory: Path) -> Path:
    """``module`` as ONNX in a fresh file under ``directory`` (one export serves every ONNX backend)."""
    path = Path(tempfile.mkdtemp(prefix="case-", dir=directory)) / "case.onnx"
    export_to_file(module.eval(), path, shape, ["y"])
    return path


def _verified(run: Runner, reference: nn.Module, shape: tuple[int, ...], label: str,
              tolerance: float) -> Prepared:
    x = make_input(shape, seed=0)
    parity = compare(torch_runner(reference.eval()), run, [shape], ["y"], candidate_name=label,
                     reference_name="torch reference", tolerance=tolerance, seeds=(0,))
    parity.raise_if_failed()
    return Prepared(lambda: run(x), parity)


def open_on_target(module: nn.Module, shape: tuple[int, ...], target: Target, options: BuildOptions, threads: int,
                   onnx_path: Path | None = None) -> OpenedRunner:
    """Export ``module`` (unless ``onnx_path`` is given) and build it for ``target``, unchecked."""
    if onnx_path is None:
        with tempfile.TemporaryDirectory(prefix="psdeploy-case-") as scratch:
            return build_and_open(export_case(module, shape, Path(scratch)), shape, target, options, threads)
    return build_and_open(onnx_path, shape, target, options, threads)


def prepare_on_target(module: nn.Module, reference: nn.Module, shape: tuple[int, ...], target: Target,
                      options: BuildOptions, threads: int, name: str, tolerance: float = DEFAULT_TOLERANCE,
                      onnx_path: Path | None = None) -> Prepared:
    """``module`` built for ``target`` (``open_on_target``), checked against ``reference`` at fp32 parity."""
    opened = open_on_target(module, shape, target, options, threads, onnx_path)
    return _verified(opened.run, reference, shape, f"{name} on {opened.description}", tolerance)


def prepare_eager(module: nn.Module, reference: nn.Module, shape: tuple[int, ...], threads: int, name: str,
                  tolerance: float = DEFAULT_TOLERANCE) -> Prepared:
    """``module`` in PyTorch eager mode (the paper's own baseline runtime)."""
    torch.set_num_threads(threads)
    module = module.eval()

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(torch.from_numpy(x))
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    return _verified(run, reference, shape, f"{name} on torch", tolerance)


def set_threads(threads: int) -> None:
    """Pin every runtime we drive to ``threads`` (OpenMP-based ones read these at start)."""
    for var in ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
