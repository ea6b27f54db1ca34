"""Callables ``np.ndarray -> list[np.ndarray]`` over each runtime, for ``compare``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from psdeploy.parity.compare import Runner


def torch_runner(model: nn.Module) -> Runner:
    model = model.eval()

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = model(torch.from_numpy(x))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.numpy() for o in outs]

    return run


def onnxruntime_session(path: str | Path, threads: int | None = None, optimize: bool = True,
                        profile_prefix: str | None = None, optimized_model: str | None = None):
    """A CPU session; ``profile_prefix`` turns its profiler on, ``optimized_model`` saves the graph it runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if optimized_model:
        options.optimized_model_filepath = optimized_model
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    # Idle workers of one session otherwise spin-wait and steal the cores from the next
    # session run interleaved with it (the bench ran ResNet-50 at one core's speed).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnxruntime_runner(path: str | Path, threads: int | None = None) -> Runner:
    session = onnxruntime_session(path, threads)
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> list[np.ndarray]:
        return list(session.run(None, {name: x}))

    return run
