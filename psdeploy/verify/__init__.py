"""Verify step: the parity API every transformation and artifact goes through."""

from psdeploy.verify.parity import DEFAULT_TOLERANCE, ParityReport, compare, make_input
from psdeploy.verify.runners import onnxruntime_runner, torch_runner

__all__ = ["DEFAULT_TOLERANCE", "ParityReport", "compare", "make_input", "onnxruntime_runner", "torch_runner"]
