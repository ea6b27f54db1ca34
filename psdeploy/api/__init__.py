"""psdeploy's Python API: what the ``psdeploy`` command does, callable from Python.

    from psdeploy import api
    loaded = api.load("ps_resnet50.pth")
    exported = api.export(loaded, "ps50.onnx")
    api.compile(exported, target="openvino-cpu", output="ps50-ov")
    api.bench(["ps50-ov", "resnet50-ov"], batches=[1, 8])

Every function raises ``PsdeployError`` (one line naming the file, layer or option at
fault) on bad input, and writes nothing half-done. The functions that write (``export``, ``compile``,
``report``, ``prune_tuning_db``) refuse an existing output unless ``force=True``, and create missing
parent folders (``psdeploy.fileio``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psdeploy.api.bundles import bundle, report_from_bundle
from psdeploy.api.recipes import Recipe, load_recipe
from psdeploy.arrays import load_npy
from psdeploy.backends import (
    BuildOptions,
    OpenedRunner,
    Profile,
    backend_for,
    model_input_shape,
    open_runner,
    parse_target,
)
from psdeploy.backends.int8 import AccuracyGate
from psdeploy.backends.profiling import profile as profile_backend
from psdeploy.backends.tune_options import DEFAULT_TUNING_DB, parse_duration, rpc_tracker
from psdeploy.backends.tvm.tuning_db import PrunedTarget, prune
from psdeploy.bench import BenchResult, bench_models
from psdeploy.bench.timing import TimingPlan
from psdeploy.bounds import (
    BATCH,
    DEFAULT_LOADS,
    ITERS,
    LOADS,
    MAX_TOP1_DROP,
    MIN_AGREEMENT,
    MIN_COSINE,
    OPSET,
    RUNS,
    THREADS,
    TOLERANCE,
    WARMUP,
    check_memory,
)
from psdeploy.calibration import read_calibration
from psdeploy.compile import CompileRequest, CompileResult, compile_model
from psdeploy.errors import PsdeployError
from psdeploy.export import AUTO, ExportResult, export_onnx, input_shape_of, parse_shape
from psdeploy.export.inspect import Inspection, inspect_model
from psdeploy.fileio import check_destination
from psdeploy.load import LoadedModel, load_model
from psdeploy.report import (
    ReportData,
    compare_reports,
    load_report_config,
    quick_config,
    run_report,
    to_json,
    write_report,
)
from psdeploy.report.compare import RatioChange, read_earlier
from psdeploy.parity.compare import DEFAULT_TOLERANCE, ParityReport, make_input
from psdeploy.parity.runners import torch_runner
from psdeploy.search import search_lowerings
from psdeploy.verify import AccuracyReport, check_fits_demo, held_out_top1, verify_artifact

Source = str | Path | LoadedModel  # a checkpoint path, "seeded:ARCH[@SEED]", or a model already loaded
Shape = str | Sequence[int] | None  # "N,C,H,W" or a tuple


def load(source: str | Path, arch: str | None = None) -> LoadedModel:
    """A checkpoint as users have it (state dict, wrappers, DataParallel, mmdetection), validated."""
    return load_model(source, arch)


def _loaded(source: Source, arch: str | None) -> LoadedModel:
    return source if isinstance(source, LoadedModel) else load_model(source, arch)


def _threads(threads: int | None) -> int | None:
    """``threads`` (None: every core) if in range."""
    return threads if threads is None else THREADS.check(threads)


def inspect(source: Source, arch: str | None = None) -> Inspection:
    """Architecture, every PSConv layer, and released vs deployed parameters and multiply-adds."""
    return inspect_model(_loaded(source, arch))


def export(source: Source, output: str | Path, *, arch: str | None = None, lowering: str | None = None,
           input_shape: Shape = None, opset: int = 18, dynamic_batch: bool = False,
           tolerance: float = DEFAULT_TOLERANCE, threads: int | None = None, on: str = "onnxruntime-cpu",
           force: bool = False) -> ExportResult:
    """Rewrite, export and verify in onnxruntime. The file is for the runtime ``on`` (``onnxruntime-cpu`` or
    ``openvino-cpu``), as the best forms differ between them: no ``lowering`` gives that runtime's default
    form, ``'auto'`` times the candidates there per layer. An existing ``output`` is refused unless ``force``."""
    target = parse_target(on)
    if target.backend == "tvm":
        raise PsdeployError(f"--on {on}: for a TVM target, 'psdeploy compile' chooses the lowering and builds")
    lowering = lowering or backend_for(target).default_lowering
    OPSET.check(opset)
    TOLERANCE.check(tolerance)
    _threads(threads)
    check_destination(Path(output), "-o", force=force)
    loaded = _loaded(source, arch)
    shape = parse_shape(input_shape, loaded)
    choices = search = None
    if lowering == AUTO:
        choices, search = search_lowerings(loaded.model, shape, target, BuildOptions(), threads or os.cpu_count() or 1)
    return export_onnx(loaded, output, lowering, shape, opset, dynamic_batch, tolerance, choices, search, force)


def compile(source: str | Path | ExportResult | None = None, *, recipe: str | Path | None = None,
            target: str | None = None, output: str | Path | None = None, arch: str | None = None,
            input_shape: Shape = None, lowering: str | None = None, tune_trials: int | None = None,
            tune_time: str | float | None = None, untuned: bool | None = None, rpc: str | tuple[str, int] | None = None,
            rpc_key: str | None = None, tuning_db: str | Path | None = None, mcpu: str | None = None,
            num_cores: int | None = None, cuda_arch: str | None = None,
            precision: str | None = None, calibration: str | Path | np.ndarray | None = None,
            min_cosine: float | None = None, min_agreement: float | None = None, max_top1_drop: float | None = None,
            winograd: str | None = None, layout: str | None = None,
            tolerance: float | None = None, force: bool = False,
            on_batch: Callable[[int], None] | None = None) -> CompileResult:
    """Build a verified artifact directory; options given here override the ``recipe``'s. ``source`` is a
    checkpoint, ``seeded:ARCH``, an ONNX file ``export`` wrote, or the result ``export`` returned. An existing
    ``output`` is refused unless ``force``. Paths in the recipe (checkpoint, calibration, tuning database,
    output) are relative to the recipe file's folder; paths given here, to the current one.

    TVM tuning: ``tune_trials`` in total and/or ``tune_time`` (seconds, or ``"20m"``), stopping at
    whichever comes first; with neither, tasks the ``tuning_db`` holds no record of are refused unless
    ``untuned=True`` builds them untuned; ``rpc="host:9190"`` with ``rpc_key`` measures candidates on the servers
    registered with that TVM RPC tracker; ``layout`` ("nchw"/"nhwc") overrides the TVM target's default.
    ``on_batch(trials)`` follows tuning.

    int8 (``precision="int8"``, onnxruntime-cpu and openvino-cpu): ``calibration`` is ``"digits"``, a .npy
    array N,C,H,W, a folder of .npy files, or an array; the artifact must then pass the accuracy gate beside
    fp32 on held-out calibration samples (``min_cosine``, ``min_agreement``; ``max_top1_drop`` in points on
    the digits demo), which only these arguments lower. f16/bf16 (openvino-cpu) pass the same gate, on
    synthetic image-like inputs."""
    r = load_recipe(recipe) if recipe else None
    model, backend, tuning = (r.model, r.backend, r.tuning) if r else (None, None, None)

    def pick(given, from_recipe, default=None):
        return given if given is not None else from_recipe if from_recipe is not None else default

    source = pick(source, model and model.checkpoint)
    target_text = pick(target, backend and backend.target)
    output = pick(output, r and r.output)
    for flag, value in (("SOURCE", source), ("--target", target_text), ("-o/--output", output)):
        if not value:
            raise PsdeployError(f"{flag} is required (given directly or in --recipe)")
    check_destination(Path(output), "-o", directory=True, force=force)  # before calibration data is read
    parsed = parse_target(target_text, pick(mcpu, backend and backend.mcpu),
                          pick(num_cores, backend and backend.num_cores), pick(cuda_arch, backend and backend.cuda_arch))
    if input_shape is not None:
        shape = input_shape_of(input_shape)
    elif model and model.input_shape:
        shape = input_shape_of(model.input_shape, f"{recipe}: 'model.input_shape'")
    else:
        shape = None
    time_budget = pick(tune_time, tuning and tuning.time)
    calibration_data = pick(calibration, backend and backend.calibration)
    gate_given = r.gate if r else AccuracyGate()
    gate = AccuracyGate(min_cosine=MIN_COSINE.check(pick(min_cosine, gate_given.min_cosine)),
                        min_agreement=MIN_AGREEMENT.check(pick(min_agreement, gate_given.min_agreement)),
                        max_top1_drop=MAX_TOP1_DROP.check(pick(max_top1_drop, gate_given.max_top1_drop)))
    options = BuildOptions(
        precision=pick(precision, backend and backend.precision, "f32"),
        calibration=None if calibration_data is None else read_calibration(calibration_data),
        winograd=pick(winograd, backend and backend.winograd, "off"),
        layout=pick(layout, backend and backend.layout),
        tune_trials=pick(tune_trials, tuning and tuning.trials, 0),
        tune_time_s=None if time_budget is None else parse_duration(time_budget),
        untuned=pick(untuned, tuning and tuning.untuned, False),
        rpc=rpc_tracker(pick(rpc, tuning and tuning.rpc), pick(rpc_key, tuning and tuning.rpc_key)),
        tuning_db=Path(pick(tuning_db, tuning and tuning.database, DEFAULT_TUNING_DB)), on_batch=on_batch)
    request = CompileRequest(
        source=source if isinstance(source, ExportResult) else str(source), target=parsed, output=Path(output),
        options=options,
        lowering=pick(lowering, r and r.lowering, backend_for(parsed).default_lowering_at(options.precision)),
        input_shape=shape,
        tolerance=TOLERANCE.check(pick(tolerance, r and r.tolerance, DEFAULT_TOLERANCE)), force=force,
        arch=pick(arch, model and model.arch), gate=gate)
    return compile_model(request)


def verify(artifact: str | Path, against: str | Path, arch: str | None = None,
           tolerance: float = DEFAULT_TOLERANCE) -> ParityReport:
    """Parity of an artifact against the checkpoint it was compiled from (call ``raise_if_failed``)."""
    TOLERANCE.check(tolerance)
    return verify_artifact(Path(artifact), str(against), arch, tolerance)


def accuracy(model: str | Path, against: Source, arch: str | None = None) -> tuple[AccuracyReport, str]:
    """Held-out top-1 of the digits demo split: the checkpoint vs an ONNX file or artifact. A model the demo
    data does not fit (input size, classes, a backbone) is refused before anything runs."""
    loaded = _loaded(against, arch)
    check_fits_demo(str(model), model_input_shape(model), loaded)
    runner = open_runner(model)
    return (held_out_top1(torch_runner(loaded.model), runner.run, runner.batch, str(model)),
            runner.description)


@dataclass
class RunResult:
    runner: OpenedRunner
    input: np.ndarray
    outputs: list[np.ndarray]
    random_input: bool


def read_input(path: str | Path, expected: tuple[int, ...]) -> np.ndarray:
    """A user's .npy input as float32 N,C,H,W of the model's shape (0 in ``expected``: any)."""
    path = Path(path)
    x = load_npy(path, f"--input {path}")
    if x.ndim != 4 or any(e and e != a for e, a in zip(expected, x.shape)):
        raise PsdeployError(f"--input {path}: shape {x.shape}; expected {expected} (0 = any)")
    return x


def run(model: str | Path, input: str | Path | np.ndarray | None = None, threads: int | None = None) -> RunResult:
    """Run an artifact (or ONNX file) once, on an array, a .npy file or a seeded random input."""
    runner = open_runner(model, _threads(threads))
    if input is None:
        shape = tuple(d or 1 for d in runner.input_shape)
        check_memory(f"{model}: its input shape", shape)
        x = make_input(shape, seed=0)
    elif isinstance(input, np.ndarray):
        x = input.astype(np.float32)
    else:
        x = read_input(input, runner.input_shape)
    return RunResult(runner, x, runner.run(x), input is None)


def bench(models: Sequence[str | Path], batches: Sequence[int] = (1,), *, warmup: int = 20, iters: int = 100,
          threads: int | None = None, loads: int = DEFAULT_LOADS,
          progress: Callable[[int, int], None] | None = None) -> BenchResult:
    """Latency of ONNX files / artifacts over ``loads`` fresh processes, interleaved round-robin within each;
    ratios to the first, with their spread within a load and across loads."""
    ITERS.check(iters)
    LOADS.check(loads)
    WARMUP.check(warmup)
    _threads(threads)
    if not batches:
        raise PsdeployError("--batch: expected at least one batch size")
    for batch in batches:
        BATCH.check(batch)
    plan = TimingPlan(warmup=warmup, max_warmup=max(5 * warmup, 50), iterations=iters)
    return bench_models([str(m) for m in models], list(batches), plan, threads, progress, loads)


def profile(model: str | Path, batch: int | None = None, runs: int = 30, threads: int | None = None,
            on: str | None = None) -> Profile:
    """Per-node time from the runtime's own counters: an artifact on its backend, an ONNX file on
    ``on`` (``onnxruntime-cpu`` by default, or ``openvino-cpu``)."""
    RUNS.check(runs)
    _threads(threads)
    if batch is not None:
        BATCH.check(batch)
    return profile_backend(model, batch, runs, threads, on)


def report(output: str | Path, *, recipe: str | Path | None = None, quick: bool = False, threads: int | None = None,
           compare_with: str | Path | None = None,
           force: bool = False) -> tuple[ReportData, list[Path], list[RatioChange]]:
    """The Appendix G tables from a report recipe (or the quick CI one), written to the folder ``output`` (an
    existing one refused unless ``force``, then replaced whole); with ``compare_with`` an earlier report.json,
    the ratios that moved (``worse`` beyond the recorded spread)."""
    if quick == bool(recipe):
        raise PsdeployError("report: give exactly one of --recipe FILE or --quick")
    _threads(threads)
    check_destination(Path(output), "-o", directory=True, force=force)  # before the timing, not after it
    earlier = read_earlier(Path(compare_with)) if compare_with else None  # before --force can replace it
    config = quick_config(threads or 2) if quick else load_report_config(recipe, threads)
    data = run_report(config)
    paths = write_report(data, Path(output), force=force)
    changes = compare_reports(Path(compare_with), to_json(data), earlier) if compare_with else []
    return data, paths, changes


def prune_tuning_db(source: str | Path, output: str | Path, *, force: bool = False) -> list[PrunedTarget]:
    """The best record of every workload of a tuning database, per target, into a new one at ``output`` (an
    existing one refused unless ``force``): small enough to commit beside the figures it produced, and what
    ``compile --tuning-db`` starts from."""
    return prune(Path(source), Path(output), force)


__all__ = ["Recipe", "report", "RunResult", "accuracy", "bench", "bundle", "compile", "export", "inspect", "load", "profile",
           "prune_tuning_db", "read_input", "report_from_bundle", "run", "verify"]
