"""Where an ONNX model's time goes in onnxruntime: per operator type and per node.

The figure that explains a ratio: e.g. whether a PS-ResNet's extra time is in its grouped
convs running below their FLOP share or in the channel gathers. Uses onnxruntime's own
profiler (per-kernel times), summed over timed runs after a warm-up.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from psdeploy.errors import PsdeployError
from psdeploy.verify.parity import make_input
from psdeploy.verify.runners import onnxruntime_session


@dataclass
class OpTime:
    name: str  # operator type, or node name
    op_type: str
    ms_per_run: float
    calls_per_run: float
    share: float  # of the summed kernel time


def _kernel_events(trace: list[dict]) -> list[dict]:
    return [e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]


def _table(totals: dict[tuple[str, str], list[float]], runs: int) -> list[OpTime]:
    grand = sum(sum(v) for v in totals.values()) or 1.0
    rows = [OpTime(name, op, sum(v) / runs / 1e3, len(v) / runs, sum(v) / grand) for (name, op), v in totals.items()]
    return sorted(rows, key=lambda r: -r.ms_per_run)


def profile_onnx(path: str | Path, batch: int | None, runs: int, threads: int | None,
                 warmup: int = 5) -> tuple[list[OpTime], list[OpTime]]:
    """(per operator type, per node) kernel time of ``runs`` runs after ``warmup``, in ms per run."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".onnx":
        raise PsdeployError(f"{path}: expected an ONNX file")
    with tempfile.TemporaryDirectory(prefix="psdeploy-profile-") as work:
        session = onnxruntime_session(path, threads, profile_prefix=str(Path(work) / "ort"))
        meta = session.get_inputs()[0]
        dims = [d if isinstance(d, int) else None for d in meta.shape]
        if batch and dims[0] not in (None, batch):
            raise PsdeployError(f"{path}: exported for batch {dims[0]}; export with --dynamic-batch to profile "
                                f"--batch {batch}")
        x = make_input((batch or dims[0] or 1, *dims[1:]), seed=0)
        for _ in range(warmup + runs):
            session.run(None, {meta.name: x})
        trace = json.loads(Path(session.end_profiling()).read_text())
    events = _kernel_events(trace)
    events = events[len(events) // (warmup + runs) * warmup:]  # the warm-up runs' kernels are not counted
    by_type: dict[tuple[str, str], list[float]] = defaultdict(list)
    by_node: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in events:
        op = e["args"].get("op_name", "?")
        by_type[(op, op)].append(float(e["dur"]))
        by_node[(e["name"].removesuffix("_kernel_time"), op)].append(float(e["dur"]))
    return _table(by_type, runs), _table(by_node, runs)
