"""Report recipes (``recipes/reports/*.yaml``): which tables, backends, shapes and timing.

Validated by schema; each backend name is resolved once into a ``Platform`` (a parsed
target plus build options, or PyTorch eager), never parsed again downstream. The one path a
report recipe may hold, ``tvm.database``, is relative to the recipe file's folder, as in compile
recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, PositiveInt, field_validator

from psdeploy.backends import BuildOptions, Target, backend_for, parse_target
from psdeploy.backends.int8 import AccuracyGate
from psdeploy.backends.tune_options import DEFAULT_TUNING_DB, TuningBudget
from psdeploy.bench.timing import rounds_per_load
from psdeploy.bounds import BATCH, ITERS, LOADS, MAX_WARMUP, PRECISIONS, SECONDS, THREADS, WARMUP, check_memory
from psdeploy.calibration import CalibrationSet
from psdeploy.errors import PsdeployError
from psdeploy.export import AUTO
from psdeploy.report.cases import LAYER_REFERENCE_CASES
from psdeploy.rewrite.lowerings import LOWERINGS
from psdeploy.schema import Strict, beside, read_yaml, validated

TORCH = "torch"
# name -> (target name, Winograd, layout); "-wino2"/"-wino4": Winograd F(2x2,3x3)/F(4x4,3x3) for every
# eligible conv (in the target's default layout); "-nchw"/"-nhwc"/"-nchwc": that conv layout; neither: the target's default layout
ONNX_BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "onnxruntime": ("onnxruntime-cpu", "off", None), "openvino": ("openvino-cpu", "off", None),
    **{f"tvm-{kind}{suffix}": (kind, wino, layout) for kind in ("llvm", "cuda")
       for suffix, wino, layout in (("", "off", None), ("-nchw", "off", "nchw"), ("-nhwc", "off", "nhwc"),
                                    ("-nchwc", "off", "nchwc"), ("-wino2", "f2", None), ("-wino4", "f4", None))},
}
BACKEND_NAMES = (TORCH, *ONNX_BACKENDS)
REPORT_LOADS = 3  # in-process loads of every case (each opened anew), fewer than bench's: a report has many groups


class _Timing(Strict):
    warmup: Annotated[int, WARMUP.constraint] = 10
    max_warmup: Annotated[int, MAX_WARMUP.constraint] = 60
    iters: Annotated[int, ITERS.constraint] = 50  # timed rounds, shared out over the loads
    loads: Annotated[int, LOADS.constraint] = REPORT_LOADS
    min_seconds: Annotated[float, SECONDS.constraint] = 0.0


class _Layers(Strict):
    shapes: list[Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]] = []  # [channels, size]
    strides: list[Literal[1, 2]] = [1]
    batches: list[Annotated[int, BATCH.constraint]] = [1]
    lowerings: list[str] = ["grouped"]
    cases: list[Literal["plain", "dilated2", "dilated4", "psconv_released"]] = list(LAYER_REFERENCE_CASES)

    @field_validator("cases")
    @classmethod
    def _plain_first(cls, cases: list[str]) -> list[str]:
        if cases[:1] != ["plain"]:
            raise ValueError("must start with plain, the baseline of every ratio")
        return cases


class _Networks(Strict):
    pairs: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = []  # [ps arch, plain arch]
    batches: list[Annotated[int, BATCH.constraint]] = [1]
    lowerings: list[str] = Field(["grouped"], min_length=1)  # "auto": searched on each backend
    backends: list[str] | None = None  # a subset of the report's backends (default: all of them)

    @field_validator("lowerings")
    @classmethod
    def _known(cls, lowerings: list[str]) -> list[str]:
        unknown = [name for name in lowerings if name not in {*LOWERINGS, AUTO}]
        if unknown:
            raise ValueError(f"unknown lowering {unknown[0]!r}; expected auto or one of {', '.join(LOWERINGS)}")
        return lowerings


class ReportRecipe(Strict):
    name: str = ""
    description: str = ""
    threads: Annotated[int, THREADS.constraint] | None = None
    backends: list[Literal[BACKEND_NAMES]] = ["onnxruntime"]  # type: ignore[valid-type]
    # each backend at each precision it builds (torch and TVM: f32); plain and PSConv always at the same one
    precision: list[Literal[PRECISIONS]] = Field(["f32"], min_length=1)  # type: ignore[valid-type]
    gate: AccuracyGate = AccuracyGate()  # what reduced-precision cases must meet beside fp32
    timing: _Timing = _Timing()
    layers: _Layers = _Layers()
    networks: _Networks = _Networks()
    tvm: TuningBudget = TuningBudget()  # per compiled case


@dataclass
class ReportConfig:
    name: str
    threads: int
    backends: list[str]
    precisions: list[str] = field(default_factory=lambda: ["f32"])
    gate: AccuracyGate = field(default_factory=AccuracyGate)
    warmup: int = 10
    max_warmup: int = 60
    iters: int = 50
    loads: int = REPORT_LOADS
    min_seconds: float = 0.0
    layer_shapes: list[tuple[int, int]] = field(default_factory=list)  # (channels, spatial)
    layer_strides: list[int] = field(default_factory=lambda: [1])
    layer_batches: list[int] = field(default_factory=lambda: [1])
    lowerings: list[str] = field(default_factory=lambda: ["grouped"])
    layer_cases: tuple[str, ...] = tuple(LAYER_REFERENCE_CASES)
    network_pairs: list[tuple[str, str]] = field(default_factory=list)  # (ps arch, plain arch)
    network_batches: list[int] = field(default_factory=lambda: [1])
    network_lowerings: list[str] = field(default_factory=lambda: ["grouped"])  # "auto": searched per backend
    network_backends: list[str] | None = None  # None: every backend
    tvm_trials: int = 0
    tvm_time_s: float | None = None
    tvm_untuned: bool = False  # no budget: build the tasks the database lacks untuned
    tvm_database: str = str(DEFAULT_TUNING_DB)
    source: str = ""


@dataclass(frozen=True)
class Platform:
    """Where a report times its cases: a parsed target with build options and a precision, or PyTorch eager."""

    name: str  # the recipe's backend name, as the tables show it
    target: Target | None  # None: PyTorch eager
    options: BuildOptions = BuildOptions()  # fp32's; a reduced precision is set per case (int8 calibrates on it)
    precision: str = "f32"




def platform(name: str, config: ReportConfig) -> Platform:
    """The recipe's backend ``name`` at fp32 (``platforms`` sets the other precisions)."""
    if name == TORCH:
        return Platform(name, None)
    if name not in ONNX_BACKENDS:
        raise PsdeployError(f"report backend {name!r}: expected one of {', '.join(BACKEND_NAMES)}")
    target_name, winograd, layout = ONNX_BACKENDS[name]
    target = parse_target(target_name, cores=config.threads if target_name == "llvm" else None)
    if target.backend != "tvm":  # the runtimes choose their own kernels: only the precision is ours
        return Platform(name, target)
    return Platform(name, target, BuildOptions(winograd=winograd, layout=layout, tune_trials=config.tvm_trials,
                                               tune_time_s=config.tvm_time_s, untuned=config.tvm_untuned,
                                               tuning_db=Path(config.tvm_database)))


def _refused(backend, at_f32: Platform, precision: str) -> str | None:
    """The option the backend refuses at ``precision`` with the platform's other options (TVM's int8 convs are
    direct: "--winograd f2"), or None. An int8 case's calibration samples, drawn per case, stand in empty."""
    unread = np.zeros((0, 3, 1, 1), np.float32)
    calibration = CalibrationSet("the report's samples", unread, unread, "") if precision == "int8" else None
    try:
        backend.check_options(at_f32.target, replace(at_f32.options, precision=precision, calibration=calibration))
    except PsdeployError as exc:
        return str(exc).split(":")[0]
    return None


def platforms(config: ReportConfig) -> tuple[list[Platform], list[str]]:
    """Each backend at each of the report's precisions it builds and this CPU runs, and the pairs left out
    with why ("torch int8 (not built there)", "openvino bf16 (not on this CPU)", "tvm-llvm-wino2 int8 (not
    built with --winograd f2)")."""
    built, left_out = [], []
    for name in config.backends:
        at_f32 = platform(name, config)
        backend = backend_for(at_f32.target) if at_f32.target is not None else None
        offered = backend.precisions if backend else ("f32",)
        here = backend.precisions_here() if backend else ("f32",)
        for precision in config.precisions:
            if precision not in offered:
                left_out.append(f"{name} {precision} (not built there)")
            elif precision not in here:
                left_out.append(f"{name} {precision} (not on this CPU)")
            elif backend is not None and (option := _refused(backend, at_f32, precision)):
                left_out.append(f"{name} {precision} (not built with {option})")
            else:
                built.append(replace(at_f32, precision=precision))
    return built, left_out


def quick_config(threads: int) -> ReportConfig:
    """What CI runs: the demo networks and small layers, a few minutes on 2 cores."""
    backends = [TORCH, "onnxruntime"]
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
    recipe = validated(ReportRecipe, read_yaml(path) or {}, str(path))
    layers, nets, timing = recipe.layers, recipe.networks, recipe.timing
    foreign = [name for name in nets.backends or [] if name not in recipe.backends]
    if foreign:
        raise PsdeployError(f"{path}: 'networks.backends': {foreign[0]!r} is not one of the report's backends "
                            f"({', '.join(recipe.backends)})")
    try:
        rounds_per_load(timing.iters, timing.loads)
    except PsdeployError as exc:
        raise PsdeployError(f"{path}: 'timing': {exc}") from None
    for channels, size in layers.shapes:
        check_memory(f"{path}: 'layers.shapes' [{channels}, {size}]", (max(layers.batches, default=1), channels, size, size))
    return ReportConfig(
        name=recipe.name or Path(path).stem, threads=threads or recipe.threads or 1, backends=list(recipe.backends),
        precisions=list(recipe.precision), gate=recipe.gate,
        warmup=timing.warmup, max_warmup=timing.max_warmup, iters=timing.iters, loads=timing.loads,
        min_seconds=timing.min_seconds,
        layer_shapes=[tuple(s) for s in layers.shapes], layer_strides=list(layers.strides), layer_batches=list(layers.batches),
        lowerings=list(layers.lowerings), layer_cases=tuple(layers.cases), network_pairs=[tuple(p) for p in nets.pairs],
        network_batches=list(nets.batches), network_lowerings=list(nets.lowerings), network_backends=nets.backends,
        tvm_trials=recipe.tvm.trials,
        tvm_time_s=recipe.tvm.time, tvm_untuned=recipe.tvm.untuned, source=str(path),
        # a database the recipe names is beside the recipe; none named: the default, in the current folder
        tvm_database=beside(path, recipe.tvm.database) if "database" in recipe.tvm.model_fields_set
        else recipe.tvm.database,
    )
