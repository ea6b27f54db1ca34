"""onnxruntime (CPU): runs the verified ONNX as it is; its artifact is that file.

Its profile is onnxruntime's own per-kernel trace, summed per node over the timed runs
after a warm-up: the figure that explains a ratio (e.g. whether a PS-ResNet's extra time
is in its grouped convs or in the channel gathers and the layout reorders around them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

from psdeploy.backends.base import (
    LAYOUT_REORDERS,
    Backend,
    BuildOptions,
    NodeTime,
    summed,
)
from psdeploy.backends.targets import Target
from psdeploy.errors import PsdeployError
from psdeploy.export.counts import ConvKey, conv_keys
from psdeploy.export.node_names import layer_of, value_layers, with_layer
from psdeploy.parity.compare import Runner
from psdeploy.parity.runners import onnxruntime_session

WARMUP_RUNS = 5
RUNS_ON = "onnxruntime"
TRANSFORMER_SUFFIX = re.compile(r"_nchwc(_token_\d+)?$")  # onnxruntime's names for the nodes it rewrites


def default_threads() -> int:
    """The intra-op threads onnxruntime starts when not told: one per physical core (its documented default),
    counted over the CPUs this process may run on from the topology Linux reports (logical CPUs without it)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            return len(cpus) or 1
    return len(cores) or 1


def _runs_on(threads: int | None, precision: str) -> str:
    """What a session runs as, with its thread count, as TVM's rows say theirs."""
    n = threads or default_threads()
    return f"{RUNS_ON} ({'' if precision == 'f32' else precision + ', '}{n} thread{'s' if n != 1 else ''})"


def _session(module: Path, threads: int | None, profile_prefix: str | None = None,
             optimized_model: str | None = None):
    try:
        return onnxruntime_session(module, threads, profile_prefix=profile_prefix, optimized_model=optimized_model)
    except Exception as exc:  # onnxruntime raises its own types for files it cannot load
        raise PsdeployError(f"{module}: onnxruntime cannot load it ({str(exc).strip().splitlines()[0]})") from None


class OnnxruntimeBackend(Backend):
    name = "onnxruntime"
    module_file = "model.onnx"
    keeps_dynamic_batch = True
    uses_options = frozenset({"precision", "calibration"})
    precisions = ("f32", "int8")  # int8: the verified ONNX quantized to QDQ, which it runs as integer kernels

    def require(self) -> None:
        """onnxruntime is a core dependency of psdeploy: always present."""

    def build(self, onnx_path: Path, input_shape: tuple[int, ...], target: Target, options: BuildOptions,
              out_dir: Path) -> dict[str, object] | None:
        if options.calibration is not None:
            from psdeploy.backends.onnxruntime_int8 import quantize_onnx

            return {"quantization": quantize_onnx(onnx_path, out_dir / self.module_file, options.calibration,
                                                  input_shape)}
        shutil.copyfile(onnx_path, out_dir / self.module_file)
        return None

    def conv_keys(self, module: Path) -> dict[str, ConvKey]:
        return conv_keys(onnx.load(str(module), load_external_data=False))

    def open(self, module: Path, target: Target, threads: int | None = None,
             precision: str = "f32") -> tuple[Runner, str]:
        session = _session(module, threads)
        name = session.get_inputs()[0].name

        def run(x: np.ndarray) -> list[np.ndarray]:
            return list(session.run(None, {name: x}))

        return run, _runs_on(threads, precision)

    def profile(self, module: Path, target: Target, x: np.ndarray, runs: int,
                threads: int | None = None, precision: str = "f32") -> tuple[list[NodeTime], str]:
        with tempfile.TemporaryDirectory(prefix="psdeploy-profile-") as work:
            optimized = Path(work) / "optimized.onnx"
            session = _session(module, threads, profile_prefix=str(Path(work) / "ort"), optimized_model=str(optimized))
            name = session.get_inputs()[0].name
            for _ in range(WARMUP_RUNS + runs):
                session.run(None, {name: x})
            trace = json.loads(Path(session.end_profiling()).read_text())
            layers = optimized_node_layers(module, optimized)
        events = [e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
        events = events[len(events) // (WARMUP_RUNS + runs) * WARMUP_RUNS:]  # warm-up kernels not counted
        by_node: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        for e in events:
            args = e["args"]
            key = (e["name"].removesuffix("_kernel_time"), args.get("op_name", "?"), args.get("provider", ""))
            by_node[key].append(float(e["dur"]))
        return summed([NodeTime(with_layer(node, layers.get(node, "")), op, kernel, sum(v) / runs / 1e3, len(v) / runs)
                       for (node, op, kernel), v in by_node.items()]), RUNS_ON


def optimized_node_layers(original: Path, optimized: Path) -> dict[str, str]:
    """Node of the graph onnxruntime runs -> the network layer it computes. Its layout transformer names
    a node after the value it writes (``conv2d_3_nchwc``), so: by the node's own name, else by that
    original value; a layout reorder it inserted goes with the node that reads its output (the layer that
    needs that layout), else with the one that writes its input."""
    value_layer = value_layers(original)
    graph = onnx.load(str(optimized), load_external_data=False).graph
    layers = {n.name: layer_of(n.name) or value_layer.get(TRANSFORMER_SUFFIX.sub("", n.name), "")
              for n in graph.node}
    readers, writer = defaultdict(list), {}
    for n in graph.node:
        for value in n.input:
            readers[value].append(n.name)
        for value in n.output:
            writer[value] = n.name
    for n in graph.node:
        if not layers[n.name] and n.op_type in LAYOUT_REORDERS:
            near = [r for o in n.output for r in readers[o]] + [writer[i] for i in n.input if i in writer]
            layers[n.name] = next((layers[m] for m in near if layers[m]), "")
    return layers
