"""Declarative compile recipes: model x lowering x backend x target x tuning x bench.

A recipe is strict YAML: an unknown key or a value of the wrong kind is an error
naming the key. Command-line flags override what the recipe says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from psdeploy.errors import PsdeployError

_SCHEMA: dict[str, Any] = {
    "name": str,
    "description": str,
    "model": {"checkpoint": str, "arch": str, "input_shape": list},
    "lowering": str,
    "backend": {"target": (str, dict), "mcpu": str, "num_cores": int, "cuda_arch": str, "precision": str,
                "winograd": str},
    "tuning": {"trials": int, "database": str},
    "tolerance": float,
    "output": str,
    "bench": {"batch": list, "warmup": int, "iters": int, "threads": int},
}


@dataclass
class Recipe:
    path: str
    checkpoint: str
    target: str
    arch: str | None = None
    input_shape: tuple[int, ...] | None = None
    lowering: str = "grouped"
    mcpu: str | None = None
    num_cores: int | None = None
    cuda_arch: str | None = None
    precision: str = "f32"
    winograd: str = "off"
    trials: int = 0
    database: str = "tuning-db"
    tolerance: float = 1e-4
    output: str | None = None
    bench: dict[str, Any] = field(default_factory=dict)


def _check(node: Any, schema: Any, where: str, path: str) -> None:
    if isinstance(schema, dict):
        if not isinstance(node, dict):
            raise PsdeployError(f"{path}: '{where or 'top level'}' must be a mapping")
        for key, value in node.items():
            dotted = f"{where}.{key}" if where else str(key)
            if key not in schema:
                raise PsdeployError(f"{path}: unknown key '{dotted}'; expected one of: {', '.join(schema)}")
            _check(value, schema[key], dotted, path)
        return
    kinds = schema if isinstance(schema, tuple) else (schema,)
    if float in kinds and isinstance(node, int) and not isinstance(node, bool):
        return
    if not isinstance(node, kinds) or isinstance(node, bool):
        expected = " or ".join(k.__name__ for k in kinds)
        raise PsdeployError(f"{path}: '{where}' must be {expected}, got {node!r}")


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise PsdeployError(f"--recipe {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PsdeployError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    _check(data, _SCHEMA, "", str(path))
    model, backend, tuning = data.get("model", {}), data.get("backend", {}), data.get("tuning", {})
    for key, section in (("model.checkpoint", model.get("checkpoint")), ("backend.target", backend.get("target"))):
        if section is None:
            raise PsdeployError(f"{path}: '{key}' is required")
    shape = model.get("input_shape")
    if shape is not None and (len(shape) != 4 or not all(isinstance(v, int) and v > 0 for v in shape)):
        raise PsdeployError(f"{path}: 'model.input_shape' must be 4 positive integers (N, C, H, W), got {shape}")
    if tuning.get("trials", 0) < 0:
        raise PsdeployError(f"{path}: 'tuning.trials' must be >= 0")
    target = backend["target"]
    return Recipe(
        path=str(path), checkpoint=model["checkpoint"], arch=model.get("arch"),
        input_shape=tuple(shape) if shape else None, lowering=data.get("lowering", "grouped"),
        target=json.dumps(target) if isinstance(target, dict) else target, mcpu=backend.get("mcpu"),
        num_cores=backend.get("num_cores"), cuda_arch=backend.get("cuda_arch"),
        precision=backend.get("precision", "f32"), winograd=backend.get("winograd", "off"), trials=tuning.get("trials", 0),
        database=tuning.get("database", "tuning-db"), tolerance=float(data.get("tolerance", 1e-4)),
        output=data.get("output"), bench=data.get("bench", {}),
    )
