"""onnxruntime (CPU): runs the verified ONNX as it is; its artifact is that file.

Its profile is onnxruntime's own per-kernel trace, summed per node over the timed runs
after a warm-up: the figure that explains a ratio (e.g. whether a PS-ResNet's extra time
is in its grouped convs or in the channel gathers and the layout reorders around them).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from psdeploy.backends.base import Backend, BuildOptions, NodeTime, summed
from psdeploy.backends.targets import Target
from psdeploy.errors import PsdeployError
from psdeploy.verify.parity import Runner
from psdeploy.verify.runners import onnxruntime_session

WARMUP_RUNS = 5
RUNS_ON = "onnxruntime"


def _session(module: Path, threads: int | None, profile_prefix: str | None = None):
    try:
        return onnxruntime_session(module, threads, profile_prefix=profile_prefix)
    except Exception as exc:  # onnxruntime raises its own types for files it cannot load
        raise PsdeployError(f"{module}: onnxruntime cannot load it ({str(exc).strip().splitlines()[0]})") from None


class OnnxruntimeBackend(Backend):
    name = "onnxruntime"
    module_file = "model.onnx"

    def require(self) -> None:
        """onnxruntime is a core dependency of psdeploy: always present."""

    def build(self, onnx_path: Path, input_shape: tuple[int, ...], target: Target, options: BuildOptions,
              out_dir: Path) -> dict[str, object] | None:
        shutil.copyfile(onnx_path, out_dir / self.module_file)
        return None

    def open(self, module: Path, target: Target, threads: int | None = None,
             precision: str = "f32") -> tuple[Runner, str]:
        session = _session(module, threads)
        name = session.get_inputs()[0].name

        def run(x: np.ndarray) -> list[np.ndarray]:
            return list(session.run(None, {name: x}))

        return run, RUNS_ON

    def profile(self, module: Path, target: Target, x: np.ndarray, runs: int,
                threads: int | None = None) -> tuple[list[NodeTime], str]:
        with tempfile.TemporaryDirectory(prefix="psdeploy-profile-") as work:
            session = _session(module, threads, profile_prefix=str(Path(work) / "ort"))
            name = session.get_inputs()[0].name
            for _ in range(WARMUP_RUNS + runs):
                session.run(None, {name: x})
            trace = json.loads(Path(session.end_profiling()).read_text())
        events = [e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
        events = events[len(events) // (WARMUP_RUNS + runs) * WARMUP_RUNS:]  # warm-up kernels not counted
        by_node: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        for e in events:
            args = e["args"]
            key = (e["name"].removesuffix("_kernel_time"), args.get("op_name", "?"), args.get("provider", ""))
            by_node[key].append(float(e["dur"]))
        return summed([NodeTime(node, op, kernel, sum(v) / runs / 1e3, len(v) / runs)
                       for (node, op, kernel), v in by_node.items()]), RUNS_ON
