"""Declarative compile recipes: model x lowering x backend x target x tuning, validated by schema.

A recipe is strict YAML: an unknown key or a value of the wrong kind is an error naming
the key and what was expected. Options given to ``psdeploy.compile`` (or on the command
line) override what the recipe says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator

from psdeploy.backends.tune_options import parse_tracker, recipe_duration
from psdeploy.backends.base import DEFAULT_TUNING_DB
from psdeploy.bounds import DEFAULT_TOLERANCE, NUM_CORES, TOLERANCE, TUNE_TRIALS
from psdeploy.errors import PsdeployError
from psdeploy.schema import Strict, read_yaml, validated


class ModelSection(Strict):
    checkpoint: str
    arch: str | None = None
    input_shape: list[PositiveInt] | None = Field(None, min_length=4, max_length=4)  # N, C, H, W


class BackendSection(Strict):
    target: str | dict[str, Any]
    mcpu: str | None = None
    num_cores: Annotated[int, NUM_CORES.constraint] | None = None
    cuda_arch: str | None = None
    precision: Literal["f32", "f16", "bf16"] = "f32"
    winograd: Literal["off", "f2", "f4"] = "off"
    layout: Literal["nchw", "nhwc", "nchwc"] | None = None  # TVM; default: the target's measured best


class TuningSection(Strict):
    trials: Annotated[int, TUNE_TRIALS.constraint] = 0  # in total; with ``time``, a cap
    time: str | PositiveFloat | PositiveInt | None = None  # a deadline: "90s", "20m", "1h", or seconds
    rpc: str | None = None  # HOST:PORT of a TVM RPC tracker that measures the candidates
    rpc_key: str | None = None  # the key its servers registered under
    database: str = str(DEFAULT_TUNING_DB)

    @field_validator("time")
    @classmethod
    def _duration(cls, value: str | float | None) -> float | None:
        return recipe_duration(value)

    @field_validator("rpc")
    @classmethod
    def _tracker(cls, value: str | None) -> str | None:
        try:
            return None if value is None else ":".join(map(str, parse_tracker(value, "")))
        except PsdeployError:
            raise ValueError("expected HOST:PORT of a TVM RPC tracker") from None


class Recipe(Strict):
    name: str = ""
    description: str = ""
    model: ModelSection
    lowering: str | None = None  # None: the target's default form
    backend: BackendSection
    tuning: TuningSection = TuningSection()
    tolerance: Annotated[float, TOLERANCE.constraint] = DEFAULT_TOLERANCE
    output: str | None = None


def load_recipe(path: str | Path) -> Recipe:
    return validated(Recipe, read_yaml(path), str(path))
