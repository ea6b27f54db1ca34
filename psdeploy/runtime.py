"""Open any deployable thing (ONNX file or compiled artifact directory) as a runner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from psdeploy.errors import PsdeployError
from psdeploy.verify.parity import Runner
from psdeploy.verify.runners import onnxruntime_runner


@dataclass
class OpenedRunner:
    run: Runner
    description: str
    input_shape: tuple[int, ...]  # 0 where dynamic
    output_names: list[str]

    @property
    def batch(self) -> int:
        return self.input_shape[0] or 1


def _onnx_signature(path: Path) -> tuple[tuple[int, ...], list[str]]:
    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value for d in dims), [o.name for o in model.graph.output]


def open_runner(path: str | Path, threads: int | None = None) -> OpenedRunner:
    path = Path(path)
    if path.is_dir():
        from psdeploy.compile.artifact import open_artifact

        return open_artifact(path, threads)
    if path.suffix != ".onnx":
        raise PsdeployError(f"{path}: expected an .onnx file or a compiled artifact directory")
    try:
        shape, outputs = _onnx_signature(path)
    except Exception as exc:  # onnx raises several unrelated types for a bad file
        raise PsdeployError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    return OpenedRunner(onnxruntime_runner(path, threads), "onnxruntime", shape, outputs)
