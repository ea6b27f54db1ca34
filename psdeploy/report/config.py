"""Report recipes (``recipes/reports/*.yaml``): which tables, backends, shapes and timing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from psdeploy.errors import PsdeployError
from psdeploy.recipes import _check
from psdeploy.report.cases import LAYER_CASES

_SCHEMA = {
    "name": str,
    "description": str,
    "threads": int,
    "backends": list,
    "timing": {"warmup": int, "max_warmup": int, "iters": int, "min_seconds": float},
    "layers": {"shapes": list, "strides": list, "batches": list, "lowerings": list, "cases": list},
    "networks": {"pairs": list, "batches": list, "lowering": str},
    "tvm": {"trials": int, "database": str},
}


@dataclass
class ReportConfig:
    name: str
    threads: int
    backends: list[str]
    warmup: int = 10
    max_warmup: int = 60
    iters: int = 50
    min_seconds: float = 0.0
    layer_shapes: list[tuple[int, int]] = field(default_factory=list)  # (channels, spatial)
    layer_strides: list[int] = field(default_factory=lambda: [1])
    layer_batches: list[int] = field(default_factory=lambda: [1])
    lowerings: list[str] = field(default_factory=lambda: ["grouped"])
    layer_cases: tuple[str, ...] = LAYER_CASES
    network_pairs: list[tuple[str, str]] = field(default_factory=list)  # (ps arch, plain arch)
    network_batches: list[int] = field(default_factory=lambda: [1])
    network_lowering: str = "grouped"
    tvm_trials: int = 0
    tvm_database: str = "tuning-db"
    source: str = ""


def quick_config(threads: int) -> ReportConfig:
    """What CI runs: the demo networks and small layers, a few minutes on 2 cores."""
    backends = ["torch", "onnxruntime"]
    try:
        import openvino  # noqa: F401

        backends.append("openvino")
    except ImportError:
        pass
    return ReportConfig(
        name="quick", threads=threads, backends=backends, warmup=5, max_warmup=30, iters=30,
        layer_shapes=[(64, 14)], layer_strides=[1, 2], layer_batches=[1],
        network_pairs=[("ps_resnet_digits", "resnet_digits")], network_batches=[1, 8], source="--quick",
    )


def load_report_config(path: str | Path, threads: int | None) -> ReportConfig:
    path = Path(path)
    if not path.is_file():
        raise PsdeployError(f"--recipe {path}: no such file")
    data = yaml.safe_load(path.read_text()) or {}
    _check(data, _SCHEMA, "", str(path))
    from psdeploy.report.backends import BACKENDS

    for backend in data.get("backends", []):
        if backend not in BACKENDS:
            raise PsdeployError(f"{path}: 'backends' has {backend!r}; expected some of {', '.join(BACKENDS)}")
    layers, nets, timing, tvm = (data.get(k, {}) for k in ("layers", "networks", "timing", "tvm"))
    shapes = layers.get("shapes", [])
    if any(not (isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) for v in s)) for s in shapes):
        raise PsdeployError(f"{path}: 'layers.shapes' must be [channels, spatial] pairs, got {shapes}")
    pairs = nets.get("pairs", [])
    if any(not (isinstance(p, list) and len(p) == 2) for p in pairs):
        raise PsdeployError(f"{path}: 'networks.pairs' must be [ps_arch, plain_arch] pairs, got {pairs}")
    layer_cases = tuple(layers.get("cases", LAYER_CASES))
    if layer_cases[:1] != ("plain",) or not set(layer_cases) <= set(LAYER_CASES):
        raise PsdeployError(f"{path}: 'layers.cases' must start with plain and name some of "
                            f"{', '.join(LAYER_CASES)}, got {list(layer_cases)}")
    if timing.get("iters", 50) < 30:
        raise PsdeployError(f"{path}: 'timing.iters' must be >= 30")
    return ReportConfig(
        name=data.get("name", path.stem), threads=threads or data.get("threads") or 1,
        backends=data.get("backends", ["onnxruntime"]), warmup=timing.get("warmup", 10),
        max_warmup=timing.get("max_warmup", 60), iters=timing.get("iters", 50),
        min_seconds=float(timing.get("min_seconds", 0.0)),
        layer_shapes=[tuple(s) for s in shapes], layer_strides=layers.get("strides", [1]),
        layer_batches=layers.get("batches", [1]), lowerings=layers.get("lowerings", ["grouped"]), layer_cases=layer_cases,
        network_pairs=[tuple(p) for p in pairs], network_batches=nets.get("batches", [1]),
        network_lowering=nets.get("lowering", "grouped"), tvm_trials=tvm.get("trials", 0),
        tvm_database=tvm.get("database", "tuning-db"), source=str(path),
    )
