"""MetaSchedule measure callbacks: progress (a bar, or plain lines in a log), each task's best latency, and Ctrl-C.

They bracket MetaSchedule's own callbacks (store the records, update the cost model), so the
time between them is the run's "update" phase. MetaSchedule's loop runs in C++ and swallows
exceptions raised in callbacks; so a SIGINT handler only sets a flag, and the scheduler
(``scheduler.py``) sends no further batch once it is set: the loop joins what is still
measuring and returns, and the caller raises KeyboardInterrupt with every record stored.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

from psdeploy.backends.tvm.measure import PhaseClock
from psdeploy.backends.tvm.scheduler import FAILED_MS
from psdeploy.progress import Progress


@dataclass
class TuningState:
    trials: int = 0
    interrupted: bool = False
    best_ms: dict[int, float] = field(default_factory=dict)  # task id -> best measured latency
    history: dict[int, list[float]] = field(default_factory=dict)  # task id -> best after each batch
    fruitless: dict[int, int] = field(default_factory=dict)  # task id -> batches in a row that found no new candidate
    waiting: Callable[[str], None] = lambda text: None  # shows what the run waits for now


def make_callbacks(total_trials: int | None, task_names: list[str], clock: PhaseClock,
                   on_batch: Callable[[int], None] | None = None):
    """(before, after, progress, state): ``before`` and ``after`` go first and last in the callback list;
    ``on_batch(trials_so_far)`` is a hook for tests."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    progress = Progress("tuning", total_trials, "trials", transient=False)
    state = TuningState(waiting=lambda text: progress.update(detail=text))
    started = [0.0]

    @derived_object
    class StartUpdate(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
            started[0] = time.perf_counter()

    @derived_object
    class ProgressCallback(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
            clock.seconds["update"] += time.perf_counter() - started[0]
            for result in runner_results:
                if result.error_msg is None and result.run_secs:
                    ms = 1e3 * sum(float(s) for s in result.run_secs) / len(result.run_secs)
                    state.best_ms[task_id] = min(state.best_ms.get(task_id, float("inf")), ms)
            state.history.setdefault(task_id, []).append(state.best_ms.get(task_id, FAILED_MS))
            state.trials += len(runner_results)
            state.fruitless[task_id] = 0 if runner_results else state.fruitless.get(task_id, 0) + 1
            # the words of the summary after tuning ("N to tune now (M of them measured)")
            detail = (f"{len(state.best_ms)} of the {len(task_names)} tasks to tune measured; best sum "
                      f"{sum(state.best_ms.values()):.2f} ms; last {task_names[task_id]}")
            progress.update(state.trials, detail=detail)
            if on_batch:
                on_batch(state.trials)

    return StartUpdate(), ProgressCallback(), progress, state


@contextmanager
def sigint_sets(state: TuningState):
    """While tuning, Ctrl-C sets ``state.interrupted`` instead of unwinding through C++."""
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame) -> None:
        state.interrupted = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
