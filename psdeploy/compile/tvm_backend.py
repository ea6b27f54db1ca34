"""ONNX -> Relax -> MetaSchedule-tuned -> built TVM module, for llvm and cuda.

We import the verified ONNX rather than re-tracing PyTorch through Relax's torch
frontend: every backend then compiles the very graph onnxruntime already checked
(the same Conv/Gather/Add nodes), so backends are compared like for like, and a
user can compile an ONNX file without the checkpoint at hand.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from psdeploy.compile.ms_build import build_candidate
from psdeploy.compile.targets import TargetSpec
from psdeploy.compile.tuning_db import TuningDatabase
from psdeploy.compile.tvm_progress import make_callback, sigint_sets
from psdeploy.errors import PsdeployError
from psdeploy.verify.parity import Runner

MODULE_FILE = "module.so"
# MetaSchedule's 30 s default build timeout kills every candidate on a 2-core machine
# (each popen builder imports TVM, then LLVM compiles heavily unrolled schedules).
BUILD_TIMEOUT_S = 180
RUN_TIMEOUT_S = 60


class _DropLevelNag(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "please set to logging.INFO" not in record.getMessage()


def quiet_metaschedule_console() -> None:
    """MetaSchedule prints a task table per batch; the progress bar replaces it."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropLevelNag) for f in logger.filters):
        logger.addFilter(_DropLevelNag())


@dataclass
class TuningSummary:
    requested_trials: int
    per_task_budget: int
    tasks: int
    tasks_tuned: int = 0
    tasks_already_tuned: int = 0
    trials_measured: int = 0
    estimated_ms: float | None = None  # sum over tasks of the best measured kernel (weighted)
    database: str = ""
    untuned: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def import_onnx(path: Path, input_shape: tuple[int, ...]):
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    from psdeploy.compile.tvm_fused import psconv_importable

    model = onnx.load(str(path))
    with psconv_importable():
        return from_onnx(model, shape_dict={model.graph.input[0].name: list(input_shape)}, keep_params_in_input=False)


def pre_tuning_passes(winograd_tile: int = 0):
    """The Relax passes before tuning, as data: legalize to TIR (Winograd convs if asked), fold, fuse.

    The same passes as Relax's "zero" pipeline, spelled out so conv2d's legalization can be chosen.
    """
    from tvm import relax

    from psdeploy.compile.tvm_winograd import winograd_legalize

    legalize = {"relax.nn.conv2d": winograd_legalize(winograd_tile)} if winograd_tile else None
    t = relax.transform
    return [
        t.DecomposeOpsForInference(),
        t.CanonicalizeBindings(),
        t.LegalizeOps(customize_legalize_map=legalize),
        t.AnnotateTIROpPattern(),
        t.FoldConstant(),
        t.FuseOps(),
        t.FuseTIR(),
    ]


def post_tuning_passes(spec: TargetSpec):
    """Apply tuned schedules; on GPU give every function still unscheduled dlight's default."""
    from tvm import relax
    from tvm.s_tir import dlight

    passes = [relax.transform.MetaScheduleApplyDatabase(enable_warning=False)]
    if spec.device == "cuda":
        passes.append(dlight.ApplyDefaultSchedule(dlight.gpu.Fallback()))
    return passes


def lower(mod, spec: TargetSpec, winograd_tile: int = 0):
    import tvm

    with tvm.target.Target(spec.tvm_target):
        return tvm.transform.Sequential(pre_tuning_passes(winograd_tile))(mod)


def search_strategy(per_task: int):
    """Evolutionary search sized to the budget: the default population (512, 4 generations)
    spends minutes per task before measuring anything on 2 cores."""
    from tvm.s_tir import meta_schedule as ms

    population = min(512, max(32, 16 * per_task))
    return ms.search_strategy.EvolutionarySearch(
        population_size=population, init_min_unmeasured=min(50, population // 2),
        genetic_num_iters=2 if per_task < 32 else 4,
    )


@dataclass
class TuningPlan:
    database: object
    tasks: list
    todo: list  # tasks the database does not yet cover to the per-task budget
    per_task: int


def plan_tuning(mod, spec: TargetSpec, db: TuningDatabase, trials: int) -> TuningPlan:
    """Which tasks still need trials: what makes an interrupted tune resume where it stopped."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    database = db.open()
    tasks = ms.relax_integration.extract_tasks(mod, tvm.target.Target(spec.tvm_target))
    if trials <= 0:
        return TuningPlan(database, tasks, [], 0)
    per_task = max(1, math.ceil(trials / len(tasks)))
    done = db.record_counts(database, [t.dispatched[0] for t in tasks])
    return TuningPlan(database, tasks, [t for t, n in zip(tasks, done) if n < per_task], per_task)


def tune(mod, spec: TargetSpec, db: TuningDatabase, trials: int, on_batch=None) -> tuple[object, TuningSummary]:
    """Tune ``mod``'s tasks within ``trials`` total; tasks the database already covers are skipped."""
    from tvm.s_tir import meta_schedule as ms

    plan = plan_tuning(mod, spec, db, trials)
    database, per_task, todo = plan.database, plan.per_task, plan.todo
    summary = TuningSummary(trials, per_task, len(plan.tasks), database=str(db.directory), notes=list(db.notes))
    summary.untuned = trials <= 0
    summary.tasks_already_tuned = 0 if summary.untuned else len(plan.tasks) - len(todo)
    summary.tasks_tuned = len(todo)
    if not todo:
        return database, summary
    quiet_metaschedule_console()
    with tempfile.TemporaryDirectory(prefix="psdeploy-ms-") as work_dir:
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            todo, work_dir, strategy=search_strategy(per_task), seed=0)
        budget = per_task * len(contexts)
        callback, progress, state, best = make_callback(budget, [c.task_name for c in contexts], on_batch)
        try:
            with progress, sigint_sets(state):
                ms.tune.tune_tasks(
                    tasks=contexts, task_weights=weights, work_dir=work_dir, max_trials_global=budget,
                    max_trials_per_task=per_task, num_trials_per_iter=min(64, max(1, per_task // 2)), database=database,
                    builder=ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S, f_build=build_candidate),
                    runner=ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S),
                    measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), callback],
                )
        except Exception:
            if state["interrupted"]:
                raise KeyboardInterrupt from None
            raise
        if state["interrupted"]:
            raise KeyboardInterrupt
        summary.trials_measured = state["trials"]
        summary.estimated_ms = sum(best.get(i, 0.0) * w for i, w in enumerate(weights)) or None
    return database, summary


def build(onnx_path: Path, input_shape: tuple[int, ...], spec: TargetSpec, db_root: Path, trials: int,
          out_file: Path, on_batch=None, winograd_tile: int = 0) -> TuningSummary:
    """Import, lower, tune, apply, compile and export the library to ``out_file``."""
    import tvm

    mod = lower(import_onnx(onnx_path, input_shape), spec, winograd_tile)
    database, summary = tune(mod, spec, TuningDatabase(db_root, spec), trials, on_batch)
    target = tvm.target.Target(spec.tvm_target)
    with target, database:
        mod = tvm.transform.Sequential(post_tuning_passes(spec))(mod)
    try:
        executable = tvm.compile(mod, target=target)
        executable.export_library(str(out_file))
    except Exception as exc:
        raise PsdeployError(f"TVM failed to build for {spec.tvm_target}: {str(exc).strip().splitlines()[-1]}") from None
    return summary


def cuda_available() -> bool:
    import tvm

    return bool(tvm.cuda(0).exist)


def load_runner(module_file: Path, spec: TargetSpec, threads: int | None = None) -> Runner:
    if threads:
        os.environ["TVM_NUM_THREADS"] = str(threads)  # read when the runtime's pool starts
    import tvm
    from tvm import relax

    if spec.device == "cuda" and not cuda_available():
        raise PsdeployError(f"{module_file.parent}: this artifact targets CUDA and no CUDA GPU is visible here; "
                            f"run it on a machine with an NVIDIA GPU")
    device = tvm.cuda(0) if spec.device == "cuda" else tvm.cpu(0)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(module_file)), device)
    main = vm["main"]

    def run(x: np.ndarray) -> list[np.ndarray]:
        out = main(tvm.runtime.tensor(x, device))
        outs = out if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else [out]
        return [np.asarray(o.numpy()) for o in outs]

    return run
