"""Which task gets the next batch of trials: where the time is, with a stop check before every batch.

MetaSchedule's ``GradientBased`` scheduler (Ansor's rule) sends the next batch to the task whose
weighted latency promises the most: weight x (alpha x its recent gain + (1 - alpha) x its best
latency / batches so far). It first gives every task one batch without reading any result, so
neither a deadline nor Ctrl-C could act during that round (dozens of batches on a ResNet-50).
This is the same rule, asked before each batch: it reads results as soon as they are in (the
database, the progress bar and the history below are then up to date), gives the first round
to the tasks the database holds least of first, and answers -1 once ``stop()`` says so;
MetaSchedule then joins the batches still measuring, keeping their records, and returns.
"""

from __future__ import annotations

from collections.abc import Callable

from psdeploy.backends.tvm.measure import PhaseClock

ALPHA = 0.2  # GradientBased's defaults
WINDOW = 3
FAILED_MS = 1e9  # MetaSchedule's latency for a candidate that did not build or run
# batches in a row in which the search found no candidate left to measure: the task's design space is spent
# (MetaSchedule itself gives up only after 5, each a full evolutionary search: most of a deadline, on small spaces)
SPENT_AFTER = 2


def gradient(history: list[float], weight: float) -> float:
    """GradientBased's score of a task from its best latency after each of its batches (-inf: nothing ran)."""
    n = len(history)
    if n == 0 or history[-1] >= FAILED_MS:
        return float("-inf")
    best = history[-1]
    recent_gain = (history[-1 - WINDOW] - best) / WINDOW if n > WINDOW else 0.0
    return weight * (ALPHA * recent_gain + (1 - ALPHA) * best / n)


def make_scheduler(first_round: list[int], history: dict[int, list[float]], fruitless: dict[int, int],
                   stop: Callable[[], bool], clock: PhaseClock):
    """A MetaSchedule task scheduler; ``history`` and ``fruitless`` are filled by a measure callback, per
    task id; the time before its first call (task set-up, design spaces) is ``clock``'s "setup" phase."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler

    @derived_object
    class WeightedDeadlineScheduler(PyTaskScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.unsent = list(first_round)  # tasks still waiting for their first batch, in this order

        def next_task_id(self) -> int:
            clock.mark_once("setup")
            scheduler = self._outer()
            tasks = scheduler.tasks_
            for i in range(len(tasks)):
                scheduler.touch_task(i)  # joins finished batches: callbacks run, records are stored
            alive = [i for i, t in enumerate(tasks) if not t.is_terminated and fruitless.get(i, 0) < SPENT_AFTER]
            if stop() or not alive:
                return -1
            fresh = [i for i in self.unsent if i in alive]
            if fresh:
                choice = fresh[0]
                self.unsent.remove(choice)
            else:
                choice = max(alive, key=lambda i: gradient(history.get(i, []), float(tasks[i].task_weight)))
            if tasks[choice].runner_futures is not None:
                scheduler.join_running_task(choice)
            return choice

    return WeightedDeadlineScheduler()
