"""A MetaSchedule measure callback that drives a rich progress bar and honours Ctrl-C.

MetaSchedule's loop runs in C++ and swallows exceptions raised in callbacks; so a
SIGINT handler only sets a flag, and the callback (run after the database has stored
the batch) terminates every task, so the loop returns and the caller raises
KeyboardInterrupt. The database keeps every record measured so far.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def make_callback(total_trials: int, task_names: list[str], on_batch: Callable[[int], None] | None = None):
    """A (callback, progress) pair; ``on_batch(trials_so_far)`` is a hook for tests."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    progress = Progress(
        TextColumn("[bold]tuning[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("trials"),
        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), transient=False,
    )
    bar = progress.add_task("tune", total=total_trials, detail="")
    best: dict[int, float] = {}
    state = {"trials": 0, "interrupted": False}

    @derived_object
    class ProgressCallback(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
            for result in runner_results:
                if result.error_msg is None and result.run_secs:
                    ms = 1e3 * sum(float(s) for s in result.run_secs) / len(result.run_secs)
                    best[task_id] = min(best.get(task_id, float("inf")), ms)
            state["trials"] += len(runner_results)
            detail = (f"tasks {len(best)}/{len(task_names)} measured; best sum "
                      f"{sum(best.values()):.2f} ms; last {task_names[task_id][:32]}")
            progress.update(bar, completed=min(state["trials"], total_trials), detail=detail)
            if on_batch:
                on_batch(state["trials"])
            if state["interrupted"]:  # end every task: the scheduler's loop then returns normally
                for task in range(len(task_names)):
                    task_scheduler.terminate_task(task)

    return ProgressCallback(), progress, state, best


@contextmanager
def sigint_sets(state: dict):
    """While tuning, Ctrl-C sets ``state['interrupted']`` instead of unwinding through C++."""
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame) -> None:
        state["interrupted"] = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
