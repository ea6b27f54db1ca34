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
    Manifest,
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
from psdeploy.bench.paired_profile import PairedProfile, profile_pair
from psdeploy.bench.timing import TimingPlan
from psdeploy.bounds import (
    BATCH,
    CALIBRATION_SIZE,
    DEFAULT_CALIBRATION_SIZE,
    DEFAULT_IMAGE_BATCH,
    DEFAULT_LOADS,
    DEFAULT_PROFILE_ROUNDS,
    IMAGE_SIDE,
    ITERS,
    LIMIT,
    LOADS,
    MAX_TOP1_DROP,
    MIN_AGREEMENT,
    MIN_COSINE,
    OPSET,
    ROUNDS,
    RUNS,
    THREADS,
    TOLERANCE,
    WARMUP,
    WORKERS,
    check_memory,
)
from psdeploy.calibration import CalibrationSet, is_image_folder, read_calibration
from psdeploy.compile import CompileRequest, CompileResult, compile_model
from psdeploy.errors import PsdeployError
from psdeploy.export import AUTO, ExportResult, export_onnx, input_shape_of, parse_shape, read_export_record
from psdeploy.export.inspect import Inspection, inspect_model
from psdeploy.fileio import check_destination
from psdeploy.images.digits import write_digits_images
from psdeploy.images.layouts import read_image_set
from psdeploy.images.preprocess import Preprocess, Triple
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
from psdeploy.verify.images import ImageAccuracy, ProgressFn, check_fits_images, image_accuracy

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
            calibration_size: int | None = None, skip_bad: bool = False,
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

    int8 (``precision="int8"``, onnxruntime-cpu and openvino-cpu): ``calibration`` is a folder of images (read
    through the model's preprocessing: ``calibration_size`` of them, a seeded class-balanced sample, calibrate and
    a third as many are held out; ``skip_bad`` leaves out, and records, files that do not decode), ``"digits"``,
    a .npy array N,C,H,W, a folder of .npy files, or an array; the artifact must then pass the accuracy gate beside
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
    size = pick(calibration_size, backend and backend.calibration_size)
    if size is not None and calibration_data is None:
        raise PsdeployError(f"--calibration-size {size}: sizes the images of --calibration, which is not given")
    options = BuildOptions(
        precision=pick(precision, backend and backend.precision, "f32"),
        calibration=None if calibration_data is None else _calibration(
            calibration_data, source, pick(arch, model and model.arch), size, skip_bad),
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


def _model_preprocessing(source: str | Path | ExportResult, arch: str | None) -> Preprocess:
    """The preprocessing of the model a compile builds: the export record's, or the checkpoint's card's."""
    if isinstance(source, ExportResult):
        record = source.record
    elif str(source).endswith(".onnx"):
        record = read_export_record(Path(source))
    else:
        return load_model(str(source), arch).config.preprocess
    if record.preprocess is None:
        raise PsdeployError(f"{source}: exported before psdeploy recorded the preprocessing, which reading "
                            f"--calibration images needs; export the checkpoint again")
    return record.preprocess


def _calibration(data: str | Path | np.ndarray, source: str | Path | ExportResult, arch: str | None,
                 size: int | None, skip_bad: bool) -> CalibrationSet:
    """``--calibration`` read: images through the model's preprocessing, arrays as they are."""
    if size is not None:
        CALIBRATION_SIZE.check(size)
    images = not isinstance(data, np.ndarray) and is_image_folder(Path(data))
    return read_calibration(data, preprocess=_model_preprocessing(source, arch) if images else None,
                            size=size or DEFAULT_CALIBRATION_SIZE, skip_bad=skip_bad)


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


def preprocessing(loaded: LoadedModel, resize: int | None = None, crop: int | None = None,
                  mean: Triple | None = None, std: Triple | None = None) -> Preprocess:
    """The model's preprocessing (its card's), with the steps given replaced."""
    for option, side in (("--resize", resize), ("--crop", crop)):
        if side is not None:
            IMAGE_SIDE.check(side, option)
    if std is not None and not all(v > 0 for v in std):
        raise PsdeployError(f"--std {','.join(map(str, std))}: expected positive numbers")
    return loaded.config.preprocess.with_overrides(resize=resize, crop=crop, mean=mean, std=std)


def accuracy_on_images(model: str | Path, against: Source, data: str | Path, *, arch: str | None = None,
                       labels: str | Path | None = None, classes: str | Path | None = None, limit: int | None = None,
                       batch: int = DEFAULT_IMAGE_BATCH, workers: int | None = None, skip_bad: bool = False,
                       resize: int | None = None, crop: int | None = None, mean: Triple | None = None,
                       std: Triple | None = None, seed: int = 0, threads: int | None = None,
                       progress: ProgressFn | None = None) -> ImageAccuracy:
    """The checkpoint (PyTorch) and an ONNX file or artifact on a folder of images, through the model's
    preprocessing (``resize``/``crop``/``mean``/``std`` override its steps): top-1/top-5 of each, their
    agreement and the images where they differ; for a detector backbone, each output's cosine and max relative
    error. ``data`` holds class folders (class index: sorted names, or the order of ``classes``, a file of
    names) or files named in ``labels`` (``filename label`` lines); ``limit`` measures a seeded class-balanced
    sample. A folder laid out wrong is refused before the artifact opens or any image is decoded."""
    BATCH.check(batch)
    _threads(threads)
    if limit is not None:
        LIMIT.check(limit)
    if workers is not None:
        WORKERS.check(workers)
    loaded = _loaded(against, arch)
    recipe = preprocessing(loaded, resize, crop, mean, std)
    shape = model_input_shape(model)
    check_fits_images(str(model), shape, loaded.config, loaded.source, recipe)
    backbone = loaded.config.num_classes is None
    if backbone and (labels or classes):
        raise PsdeployError(f"{'--labels' if labels else '--classes'}: {loaded.source} is a detector backbone "
                            f"(C2..C5, no classes); its outputs are compared without labels")
    images = read_image_set(data, labels=labels, classes=classes, num_classes=loaded.config.num_classes,
                            labelled=not backbone)
    if limit is not None:
        images = images.balanced(limit, seed)
    precision = Manifest.read(Path(model)).precision if Path(model).is_dir() else "f32"
    runner = open_runner(model, threads)
    return image_accuracy(torch_runner(loaded.model), runner, images, recipe, precision=precision, batch=batch,
                          workers=workers, skip_bad=skip_bad, progress=progress)


def digits_images(output: str | Path, *, force: bool = False) -> dict[str, int]:
    """The digits demo's splits as PNG files in class folders (``output``/train, ``output``/held-out): what
    ``accuracy --data`` and ``--calibration`` read; the count of each split."""
    return write_digits_images(output, force=force)


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


def profile_against(model: str | Path, against: str | Path, rounds: int = DEFAULT_PROFILE_ROUNDS,
                    batch: int | None = None, runs: int = 30, threads: int | None = None,
                    on: str | None = None) -> PairedProfile:
    """``model`` and ``against`` (e.g. the plain ResNet, or the same network on another runtime) profiled the
    same way in ``rounds`` alternating rounds: each node's median time, and per conv the median of the rounds'
    speed shares with its p10-p90 band. ``on`` names the runtime of whichever is an ONNX file; an artifact runs
    on its own backend (a TVM artifact against an ONNX file on OpenVINO, say)."""
    ROUNDS.check(rounds)

    def profile_one(path: Path) -> Profile:
        return profile(path, batch, runs, threads, None if path.is_dir() else on)

    return profile_pair(profile_one, Path(model), Path(against), rounds)


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


__all__ = ["Recipe", "report", "RunResult", "accuracy", "accuracy_on_images", "bench", "bundle", "compile",
           "digits_images", "export", "inspect", "load", "preprocessing", "profile", "profile_against",
           "prune_tuning_db", "read_input", "report_from_bundle", "run", "verify"]
