"""MetaSchedule tuning into the persistent database: a trial budget, a time budget, or both.

``--tune-trials N`` is a number of trials in total; ``--tune-time D`` a deadline for the whole
tuning step; given both, tuning stops at whichever comes first (the trials are then a cap).
Trials come in batches (several candidates built and measured per search round, so the
per-batch costs are shared): every task gets one batch first, about half its even share of
the trials (all of it for small budgets), and the rest goes where the time is, by
MetaSchedule's gradient rule (``scheduler.py``).

Resuming: with a trial budget, a task the database already holds a first batch of is covered
and skipped, so an interrupted or timed-out tune resumes with the tasks it had not reached
(the tasks the database holds least of go first). With a time budget alone nothing counts as
covered: each run spends its time, continuing from the records the database holds.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass

from psdeploy.backends.artifact import TuningSummary
from psdeploy.backends.targets import Target
from psdeploy.backends.tune_options import RpcTracker
from psdeploy.backends.tvm.int8_tiling import register_int8_rule
from psdeploy.backends.tvm.intrinsics import register_tensor_intrinsics
from psdeploy.backends.tvm.register_tiling import TARGET_KEY, register_schedule_rules
from psdeploy.backends.tvm.fleet import FleetHealth, check_fleet_threads, fleet_runner
from psdeploy.backends.tvm.measure import PhaseClock, local_runner, pooled_builder, timed_runner
from psdeploy.backends.tvm.progress import make_callbacks, sigint_sets
from psdeploy.backends.tvm.scheduler import make_scheduler
from psdeploy.backends.tvm.tuning_db import TuningDatabase
from psdeploy.backends.tvm.winograd import register_data_pack_rule
from psdeploy.errors import PsdeployError
from psdeploy.quiet import is_verbose

MIN_BATCH = 8  # candidates per batch below which MetaSchedule's per-batch costs dominate
MAX_BATCH = 64
TIME_BATCH = 16  # candidates per batch when only a deadline bounds the run
UNCAPPED = 1 << 30  # MetaSchedule wants a trial cap (a C++ int); with a deadline alone, none binds
METASCHEDULE_LOGGER = "tvm.s_tir.meta_schedule"
XGB_WARMUP = 100  # XGBModel's num_warmup_samples: below it, it predicts at random (and still trains)


class _DropLevelNag(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "please set to logging.INFO" not in record.getMessage()


def quiet_metaschedule_console() -> None:
    """MetaSchedule prints a task table per batch; the progress bar replaces it (``--verbose`` keeps it)."""
    if is_verbose():
        return
    logger = logging.getLogger(METASCHEDULE_LOGGER)
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropLevelNag) for f in logger.filters):
        logger.addFilter(_DropLevelNag())


def cost_model(trials: int) -> str:
    """MetaSchedule's XGBoost model, unless the run ends before it would be consulted: it scores
    candidates at random until it holds ``XGB_WARMUP`` results, yet retrains on every 20 % more
    data meanwhile (17 trainings, most of the tuning time of a 64-trial run on 2 cores)."""
    return "random" if trials < XGB_WARMUP else "xgb"


def search_strategy(batch: int):
    """Evolutionary search sized to the batch: the default population (512, 4 generations)
    spends minutes per task before measuring anything on 2 cores."""
    from tvm.s_tir import meta_schedule as ms

    population = min(512, max(32, 8 * batch))
    return ms.search_strategy.EvolutionarySearch(
        population_size=population, init_min_unmeasured=min(50, population // 2),
        genetic_num_iters=2 if batch < 16 else 4,
    )


def batch_size(trials: int, tasks: int) -> int:
    """Candidates per batch for a trial budget: each task's first batch is half its even share
    (at least ``MIN_BATCH``), or all of it when the share is smaller; the rest goes by gradient."""
    fair = math.ceil(trials / tasks)
    return min(fair, MAX_BATCH, max(MIN_BATCH, math.ceil(fair / 2)))


@dataclass
class TuningPlan:
    database: object
    tasks: list
    todo: list  # tasks to tune now, those the database holds fewest records of first
    per_task: int  # records that make a task covered (0: none is, with a time budget alone)
    batch: int  # candidates per batch
    trials: int  # the cap on this run's trials


def plan_tuning(mod, target: Target, db: TuningDatabase, trials: int, time_s: float | None = None) -> TuningPlan:
    """Which tasks get trials, in which order, in batches of how many."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    database = db.open()
    tasks = ms.relax_integration.extract_tasks(mod, tvm.target.Target(target.tvm_target))
    if trials <= 0 and time_s is None:
        return TuningPlan(database, tasks, [], 0, 0, 0)
    done = db.record_counts(database, [t.dispatched[0] for t in tasks])
    if trials > 0:
        fair = math.ceil(trials / len(tasks))
        batch = batch_size(trials, len(tasks))
        todo = [i for i, n in enumerate(done) if n < batch]
        per_task, cap = batch, fair * len(todo)
    else:
        batch, todo, per_task, cap = TIME_BATCH, list(range(len(tasks))), 0, UNCAPPED
    todo.sort(key=lambda i: done[i])
    return TuningPlan(database, tasks, [tasks[i] for i in todo], per_task, batch, cap)


def missing_tasks(summary: TuningSummary) -> int:
    """Tasks a build with no budget finds no record of: they would build untuned."""
    return summary.tasks - summary.tasks_already_tuned if summary.untuned else 0


def drop_log_files(work_dir: str) -> None:
    """MetaSchedule leaves a file handler per tuning run on its loggers, writing into that run's (temporary)
    work directory: the next run in the same process would log into a deleted directory and fail."""
    for name in [n for n in logging.root.manager.loggerDict if n.startswith(METASCHEDULE_LOGGER)]:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)
                        and h.baseFilename.startswith(work_dir)]:
            logger.removeHandler(handler)
            handler.close()


def drop_unnamed_handlers() -> None:
    """MetaSchedule's logger set-up formats the name of each handler already on its logger, and fails on one
    without a name (a handler another library, or pytest's log capture, left there); the configuration it
    installs replaces that logger's handlers anyway."""
    logger = logging.getLogger(METASCHEDULE_LOGGER)
    for handler in [h for h in logger.handlers if not h.get_name()]:
        logger.removeHandler(handler)


def tune_contexts(tasks: list, work_dir: str, batch: int) -> tuple[list, list]:
    """MetaSchedule's tuning contexts (and task weights) for ``tasks``, the search sized to ``batch``, logging
    into ``work_dir`` (whose file handlers the caller drops: ``drop_log_files``)."""
    from tvm.s_tir import meta_schedule as ms

    drop_unnamed_handlers()
    return ms.relax_integration.extracted_tasks_to_tune_contexts(tasks, work_dir, strategy=search_strategy(batch),
                                                                 seed=0)


def tune(mod, target: Target, db: TuningDatabase, trials: int, time_s: float | None = None,
         rpc: RpcTracker | None = None, on_batch=None) -> tuple[object, TuningSummary]:
    """Tune ``mod``'s tasks within the budget; a KeyboardInterrupt after Ctrl-C, every record kept."""
    from tvm.s_tir import meta_schedule as ms

    clock = PhaseClock()
    deadline = None if time_s is None else clock.origin + time_s
    plan = plan_tuning(mod, target, db, trials, time_s)
    summary = TuningSummary(requested_trials=trials, per_task_budget=plan.per_task, tasks=len(plan.tasks),
                            time_budget_s=time_s, batch=plan.batch,
                            measured_on=f"rpc {rpc.address} key {rpc.key}" if rpc else "local",
                            database=str(db.directory), notes=list(db.notes))
    summary.untuned = trials <= 0 and time_s is None
    if summary.untuned:  # schedules come from the database alone: say how many tasks it covers
        held = db.record_counts(plan.database, [t.dispatched[0] for t in plan.tasks])
        summary.tasks_already_tuned = sum(1 for n in held if n)
    else:
        summary.tasks_already_tuned = len(plan.tasks) - len(plan.todo)
    summary.tasks_tuned = len(plan.todo)
    if not plan.todo:
        return plan.database, summary
    health = FleetHealth(check_fleet_threads(rpc, target.threads)) if rpc else None
    summary.measured_threads = target.threads
    quiet_metaschedule_console()
    register_tensor_intrinsics(target)
    register_schedule_rules()
    register_int8_rule()
    register_data_pack_rule(TARGET_KEY)
    with tempfile.TemporaryDirectory(prefix="psdeploy-ms-") as work_dir:
        contexts, weights = tune_contexts(plan.todo, work_dir, plan.batch)
        before, after, progress, state = make_callbacks(
            plan.trials if plan.trials < UNCAPPED else None, [c.task_name for c in contexts], clock, on_batch)
        inner = fleet_runner(rpc, target.threads, health, state.waiting) if rpc else local_runner(target.threads)
        runner = timed_runner(inner, clock)

        def stop() -> bool:
            return (state.interrupted or (deadline is not None and time.perf_counter() >= deadline)
                    or (health is not None and health.lost is not None))

        builder = pooled_builder(clock, os.cpu_count() or 1)
        try:
            with progress, sigint_sets(state):
                ms.tune.tune_tasks(
                    tasks=contexts, task_weights=weights, work_dir=work_dir, max_trials_global=plan.trials,
                    max_trials_per_task=plan.trials, num_trials_per_iter=plan.batch, database=plan.database,
                    builder=builder, runner=runner, cost_model=cost_model(plan.trials),
                    task_scheduler=make_scheduler(list(range(len(contexts))), state.history, state.fruitless, stop,
                                                  clock),
                    measure_callbacks=[before, *ms.measure_callback.MeasureCallback.create("default"), after],
                )
        except Exception:
            if state.interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            builder.shutdown()
            if rpc:
                inner.shutdown()
            drop_log_files(work_dir)
        if state.interrupted:
            raise KeyboardInterrupt
    if health is not None and health.lost:
        raise PsdeployError(f"--rpc {rpc.address} key {rpc.key}: no server left to measure on ({health.lost}); "
                            f"the {state.trials} trials measured before are kept in {db.directory}")
    summary.trials_measured = state.trials
    summary.tasks_measured = len(state.best_ms)
    summary.stopped_by = ("deadline" if deadline is not None and time.perf_counter() >= deadline
                          else "trials" if state.trials >= plan.trials else "search space")
    summary.tuning_s = clock.elapsed()
    summary.trials_per_min = 60.0 * state.trials / summary.tuning_s
    measured = {phase: clock.seconds[phase] for phase in ("build", "run", "update")}
    setup = clock.seconds.get("setup", summary.tuning_s)  # no batch was sent: all of it was setup
    search = max(0.0, summary.tuning_s - setup - sum(measured.values()))  # MetaSchedule's own loop
    summary.phase_s = {"setup": setup, "search": search, **measured}
    summary.estimated_ms = sum(state.best_ms.get(i, 0.0) * w for i, w in enumerate(weights)) or None
    summary.tasks_all_failed = [contexts[i].task_name for i in sorted(state.history) if i not in state.best_ms]
    return plan.database, summary
