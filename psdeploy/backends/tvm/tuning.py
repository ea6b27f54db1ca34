"""MetaSchedule tuning into the persistent database, resumable, with progress and Ctrl-C.

A budget is a number of trials in total, spread evenly over the tasks; tasks the
database already covers to that per-task budget are skipped, which is what makes an
interrupted tune resume where it stopped.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict, dataclass, field

from psdeploy.backends.targets import Target
from psdeploy.backends.tvm.ms_build import build_candidate
from psdeploy.backends.tvm.progress import make_callback, sigint_sets
from psdeploy.backends.tvm.tuning_db import TuningDatabase
from psdeploy.quiet import is_verbose

# MetaSchedule's 30 s default build timeout kills every candidate on a 2-core machine
# (each popen builder imports TVM, then LLVM compiles heavily unrolled schedules).
BUILD_TIMEOUT_S = 180
RUN_TIMEOUT_S = 60


class _DropLevelNag(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "please set to logging.INFO" not in record.getMessage()


def quiet_metaschedule_console() -> None:
    """MetaSchedule prints a task table per batch; the progress bar replaces it (``--verbose`` keeps it)."""
    if is_verbose():
        return
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


def plan_tuning(mod, spec: Target, db: TuningDatabase, trials: int) -> TuningPlan:
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


def tune(mod, spec: Target, db: TuningDatabase, trials: int, on_batch=None) -> tuple[object, TuningSummary]:
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


