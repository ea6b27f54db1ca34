"""Artifact directories: the built module beside a JSON manifest that says what it is.

The manifest is the artifact's identity card (backend, exact target, the checkpoint it came
from, the lowering, tuning and verification results); it is validated on every read, so a
damaged or foreign directory is refused in one line instead of failing deep inside a runtime.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from psdeploy.backends.int8 import CalibrationRecord, GateRecord, QuantizationRecord
from psdeploy.backends.targets import Target
from psdeploy.bounds import PRECISIONS, WINOGRAD
from psdeploy.errors import PsdeployError
from psdeploy.export.counts import ConvKey
from psdeploy.export.record import SearchRow
from psdeploy.schema import Strict, validated
from psdeploy.sources import MANIFEST

MANIFEST_FORMAT = 1


class KernelWork(Strict):
    """The conv one compiled kernel computes (TVM): its output and the reduction behind each output value."""

    op: str  # the reduction block: conv2d_NCHWc, conv2d_nchw, psconv_fused, ...
    batch: int = Field(ge=1)
    out_channels: int = Field(ge=1)
    out_height: int = Field(ge=1)
    out_width: int = Field(ge=1)
    reduction: int = Field(ge=1)  # multiply-adds per output value: C_in/groups x kh x kw

    @property
    def key(self) -> ConvKey:
        return ConvKey(self.out_channels, self.out_height, self.out_width, self.reduction)

    @property
    def flops(self) -> float:  # per call
        return self.key.flops(self.batch)


class TuningSummary(Strict):
    """What a TVM build's tuning step did (filled in as it runs, then recorded in the manifest)."""

    model_config = {**Strict.model_config, "frozen": False}

    requested_trials: int
    per_task_budget: int  # records that make a task covered (its first batch); 0: nothing counts as covered
    tasks: int
    time_budget_s: float | None = None
    batch: int = 0  # candidates built and measured per search round
    measured_on: str = "local"  # or the RPC tracker and key
    measured_threads: int | None = None  # TVM threads each candidate was timed with (the target's num-cores)
    tasks_tuned: int = 0  # tasks to tune in this run
    tasks_measured: int = 0  # of those, the tasks with a candidate measured (none, where time or trials ran out)
    tasks_already_tuned: int = 0
    trials_measured: int = 0
    stopped_by: str = ""  # "trials", "deadline" or "search space" (every task exhausted or capped)
    tuning_s: float = 0.0  # wall time of the tuning step, task extraction included
    trials_per_min: float = 0.0
    phase_s: dict[str, float] = Field(default_factory=dict)  # setup, search, build, run, update
    estimated_ms: float | None = None  # sum over tasks of the best measured kernel (weighted)
    tasks_all_failed: list[str] = Field(default_factory=list)  # tasks measured this run with no candidate running
    database: str = ""
    untuned: bool = False
    notes: list[str] = Field(default_factory=list)


class Manifest(Strict):
    model_config = {**Strict.model_config, "frozen": False}

    backend: str
    target: str
    target_spec: dict[str, Any] | None
    arch: str
    lowering: str
    source: str  # the checkpoint (or seeded:ARCH) the artifact computes; an ONNX file's path before onnx was kept
    source_sha256: str
    onnx: str | None = None  # the exported ONNX file it was compiled from, if it was
    input_shape: list[Annotated[int, Field(ge=0)]] = Field(min_length=4, max_length=4)  # N,C,H,W; 0 where dynamic
    output_names: list[str] = Field(min_length=1)
    module_file: str
    precision: Literal[PRECISIONS] = "f32"
    winograd: Literal[WINOGRAD] = "off"
    layout: Annotated[str, Field(pattern=r"^(nchw|nhwc|nchw[0-9]+c)$")] | None = None  # TVM: its convs' layout (block)
    versions: dict[str, str] = Field(default_factory=dict)
    tuning: TuningSummary | None = None
    parity: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    calibration: CalibrationRecord | None = None  # int8: the data it was calibrated and gated on
    quantization: QuantizationRecord | None = None  # int8: the quantizer and the convs that run int8
    gate: GateRecord | None = None  # int8: its outputs beside fp32's on held-out calibration samples
    lowering_search: list[SearchRow] | None = None
    kernels: dict[str, KernelWork] | None = None  # TVM: symbol -> the conv it computes
    created: str = Field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    format: Literal[1] = MANIFEST_FORMAT

    def write(self, directory: Path) -> None:
        (directory / MANIFEST).write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        if not path.is_file():
            raise PsdeployError(f"{directory}: not a psdeploy artifact (no {MANIFEST})")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PsdeployError(f"{path}: unreadable manifest ({exc.__class__.__name__}); expected JSON") from None
        return validated(cls, data, str(path))

    @property
    def target_object(self) -> Target:
        return Target(self.backend, self.target, self.target_spec)
