"""Parity: how two runners of one function are compared (max|err|/max|ref|, cosine), and the runners.

Every transformation goes through it: export checks its ONNX against the checkpoint, each backend
builds a runner in this shape, and the verify stage compares a built artifact with its checkpoint.
"""

from psdeploy.parity.compare import DEFAULT_TOLERANCE, ParityReport, Runner, compare, make_input
from psdeploy.parity.runners import onnxruntime_runner, torch_runner

__all__ = ["DEFAULT_TOLERANCE", "ParityReport", "Runner", "compare", "make_input", "onnxruntime_runner",
           "torch_runner"]
