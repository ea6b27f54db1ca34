"""Declarative compile recipes: model x lowering x backend x target x tuning, validated by schema.

A recipe is strict YAML: an unknown key or a value of the wrong kind is an error naming
the key and what was expected. Options given to ``psdeploy.compile`` (or on the command
line) override what the recipe says.

Every path in a recipe (``model.checkpoint``, ``backend.calibration``, ``tuning.database``,
``output``) is relative to the folder of the recipe file, wherever psdeploy is run from;
``seeded:ARCH`` and the calibration set ``digits`` are names, not paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PositiveInt

from psdeploy.backends.int8 import AccuracyGate
from psdeploy.backends.tune_options import TuningBudget, parse_tracker
from psdeploy.bounds import CALIBRATION_SIZE, DEFAULT_TOLERANCE, LAYOUTS, NUM_CORES, PRECISIONS, TOLERANCE, WINOGRAD
from psdeploy.calibration import DIGITS
from psdeploy.errors import PsdeployError
from psdeploy.load.loader import SEEDED_PREFIX
from psdeploy.schema import Strict, beside, read_yaml, validated


def _tracker(value: object) -> object:
    """A recipe's ``tuning.rpc`` (``HOST:PORT``) as (host, port); the schema names the key when it is not one."""
    if not isinstance(value, str):
        return value
    try:
        return parse_tracker(value, "")
    except PsdeployError:
        raise ValueError("expected HOST:PORT of a TVM RPC tracker") from None


class ModelSection(Strict):
    checkpoint: str
    arch: str | None = None
    input_shape: list[PositiveInt] | None = Field(None, min_length=4, max_length=4)  # N, C, H, W


class BackendSection(Strict):
    target: str | dict[str, Any]
    mcpu: str | None = None
    num_cores: Annotated[int, NUM_CORES.constraint] | None = None
    cuda_arch: str | None = None
    precision: Literal[PRECISIONS] = "f32"  # the values are bounds' (the command line's choices too)
    calibration: str | None = None  # int8: a folder of images, 'digits', a .npy array N,C,H,W, or a folder of .npy files
    calibration_size: Annotated[int, CALIBRATION_SIZE.constraint] | None = None  # images calibrated on
    winograd: Literal[WINOGRAD] = "off"
    layout: Literal[LAYOUTS] | None = None  # TVM; default: the target's measured best


class TuningSection(TuningBudget):  # trials in total
    rpc: Annotated[tuple[str, int] | None, BeforeValidator(_tracker)] = None  # HOST:PORT of a TVM RPC tracker
    rpc_key: str | None = None  # the key its servers registered under


class Recipe(Strict):
    name: str = ""
    description: str = ""
    model: ModelSection
    lowering: str | None = None  # None: the target's default form
    backend: BackendSection
    tuning: TuningSection = TuningSection()
    gate: AccuracyGate = AccuracyGate()  # int8, f16, bf16: what the artifact must meet beside fp32
    tolerance: Annotated[float, TOLERANCE.constraint] = DEFAULT_TOLERANCE
    output: str | None = None


def load_recipe(path: str | Path) -> Recipe:
    """The recipe at ``path``, its paths made relative to its folder (see the module docstring)."""
    recipe = validated(Recipe, read_yaml(path), str(path))
    model, backend, tuning = recipe.model, recipe.backend, recipe.tuning
    checkpoint = model.checkpoint
    calibration = backend.calibration
    return recipe.model_copy(update={
        "model": model.model_copy(update={
            "checkpoint": checkpoint if checkpoint.startswith(SEEDED_PREFIX) else beside(path, checkpoint)}),
        "backend": backend.model_copy(update={
            "calibration": calibration if calibration in (None, DIGITS) else beside(path, calibration)}),
        # not written in the recipe: the default database, in the current folder like --tuning-db's
        "tuning": tuning.model_copy(update={"database": beside(path, tuning.database)})
        if "database" in tuning.model_fields_set else tuning,
        "output": recipe.output and beside(path, recipe.output),
    })
