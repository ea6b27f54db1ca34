"""What an int8 build records, whichever runtime's quantizer made it: the tool and which convs really run int8.

A quantizer can leave a conv in fp32 without a word (a pattern it does not match, a kernel the
runtime lacks); counting the convs that run int8, and naming the layers of those that do not,
is what tells a user whether the int8 artifact is int8 where the time goes.
"""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

from pydantic import Field

from psdeploy.bounds import (
    DEFAULT_MAX_TOP1_DROP,
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_MIN_COSINE,
    MAX_TOP1_DROP,
    MIN_AGREEMENT,
    MIN_COSINE,
)
from psdeploy.calibration import CalibrationSet
from psdeploy.errors import PsdeployError
from psdeploy.schema import Strict


class CalibrationRecord(Strict):
    """The data an int8 artifact was calibrated and gated on."""

    source: str
    sha256: str
    calibrated_on: int = Field(ge=1)
    held_out: int = Field(ge=1)
    preprocess: str | None = None  # images: the recipe they went through
    skipped: list[str] = Field(default_factory=list)  # images left out as bad (--skip-bad): "file: reason"

    @classmethod
    def of(cls, data: CalibrationSet) -> CalibrationRecord:
        return cls(source=data.source, sha256=data.sha256, calibrated_on=len(data.calibrate),
                   held_out=len(data.held_out), preprocess=data.preprocess or None,
                   skipped=[f"{file}: {reason}" for file, reason in data.skipped])


class QuantizationRecord(Strict):
    tool: str  # the quantizer and its version
    convs: int = Field(ge=0)
    convs_int8: int = Field(ge=0)
    float_convs: list[str] = Field(default_factory=list)  # the layers (or nodes) of the convs left in fp32

    @classmethod
    def counted(cls, tool: str, where: str, int8: list[str], float_: list[str]) -> QuantizationRecord:
        """The record of a build whose convs ran as ``int8`` / ``float_`` (layer names); none in int8 is an error."""
        if not int8:
            raise PsdeployError(f"{where}: {tool} left all {len(float_)} convs in fp32; expected an int8 graph")
        return cls(tool=tool, convs=len(int8) + len(float_), convs_int8=len(int8), float_convs=sorted(set(float_)))


def tool_version(package: str) -> str:
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package


class AccuracyGate(Strict):
    """What an int8 artifact must meet beside fp32 (lowered only when the user says so)."""

    min_cosine: Annotated[float, MIN_COSINE.constraint] = DEFAULT_MIN_COSINE  # mean over held-out samples
    min_agreement: Annotated[float, MIN_AGREEMENT.constraint] = DEFAULT_MIN_AGREEMENT  # same top-1 class as fp32
    max_top1_drop: Annotated[float, MAX_TOP1_DROP.constraint] = DEFAULT_MAX_TOP1_DROP  # points; the demo's labels


class GateRecord(Strict):
    """A reduced-precision artifact beside fp32 on held-out samples, and the gate it passed."""

    samples: int = Field(ge=1)
    data: str = ""  # the samples' source: --calibration's, or synthetic inputs (f16/bf16); "" in manifests before it
    mean_cosine: float
    min_cosine: float
    top1_agreement: float | None  # None where the first output is not (N, classes)
    gate: AccuracyGate
