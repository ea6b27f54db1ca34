"""Interleaved timing: every case runs once per round, so machine noise hits all alike.

Warm-up runs rounds until each case's recent latencies settle (or a cap). Each timed round
then gives every case a short block of runs, the order rotated from round to round so no
case always runs first. The first run of a block follows another case, whose runtime may
still hold the cores or the caches (a thread pool spinning down, its buffers in L2): it is
run but not timed, so every timed run follows a run of its own case, as in a server that
runs one model. A case's figure for the round is the median of its timed runs in the block.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from psdeploy.bench.stats import LatencyStats, Pooled, pool_loads
from psdeploy.errors import PsdeployError

Clock = Callable[[], float]  # seconds
MIN_ROUNDS_PER_LOAD = 5  # a load's own median and ratio need that many


@dataclass
class TimingPlan:
    warmup: int = 10  # minimum warm-up rounds
    max_warmup: int = 100  # cap when latencies keep drifting
    iterations: int = 50  # timed rounds (every case one block each)
    min_seconds: float = 0.0  # keep timing rounds until this much time has passed
    settle_pct: float = 5.0  # warm-up ends when the last-window median moves less than this
    block: int = 2  # timed runs per case per round, after its one untimed run


@dataclass
class TimedCase:
    name: str
    samples_ms: list[float] = field(default_factory=list)  # every timed run
    rounds_ms: list[float] = field(default_factory=list)  # one figure per round: its block's median

    @property
    def stats(self) -> LatencyStats:
        return LatencyStats.from_samples(self.samples_ms)


def rotated(items: list[str], k: int) -> list[str]:
    """``items`` started at its ``k``-th (modulo its length): who goes first moves on each round or load."""
    shift = k % len(items)
    return items[shift:] + items[:shift]


def _once(fn: Callable[[], object], clock: Clock) -> float:
    start = clock()
    fn()
    return (clock() - start) * 1e3


def _settled(history: list[float], window: int, pct: float) -> bool:
    if len(history) < 2 * window:
        return False
    prev, last = np.median(history[-2 * window:-window]), np.median(history[-window:])
    return abs(last - prev) / prev * 100 < pct


def _warm_up(cases: dict[str, Callable[[], object]], plan: TimingPlan, clock: Clock) -> None:
    names = list(cases)
    warm: dict[str, list[float]] = {n: [] for n in names}
    window = max(3, plan.warmup // 2)
    for round_ in range(plan.max_warmup):
        for n in names:
            warm[n].append(_once(cases[n], clock))
        if round_ + 1 >= plan.warmup and all(_settled(warm[n], window, plan.settle_pct) for n in names):
            break


def run_interleaved(
    cases: dict[str, Callable[[], object]],
    plan: TimingPlan,
    progress: Callable[[int, int], None] | None = None,
    clock: Clock = time.perf_counter,
) -> dict[str, TimedCase]:
    names = list(cases)
    _warm_up(cases, plan, clock)
    timed = {n: TimedCase(n) for n in names}
    start = clock()
    round_ = 0
    while round_ < plan.iterations or clock() - start < plan.min_seconds:
        for n in rotated(names, round_):
            cases[n]()  # follows another case: not timed
            block = [_once(cases[n], clock) for _ in range(plan.block)]
            timed[n].samples_ms.extend(block)
            timed[n].rounds_ms.append(float(np.median(block)))
        round_ += 1
        if progress:
            progress(round_, plan.iterations)
    return timed


def rounds_per_load(iterations: int, loads: int) -> list[int]:
    """``iterations`` timed rounds shared out over ``loads``, each at least ``MIN_ROUNDS_PER_LOAD``."""
    if iterations < loads * MIN_ROUNDS_PER_LOAD:
        raise PsdeployError(f"--loads {loads}: {iterations} timed rounds give fewer than {MIN_ROUNDS_PER_LOAD} per "
                            f"load; expected --iters of at least {loads * MIN_ROUNDS_PER_LOAD}, or fewer loads")
    return [iterations // loads + (k < iterations % loads) for k in range(loads)]


Opener = Callable[[], Callable[[], object]]  # opens a case anew (a new load of its model) and returns its run


def run_loads(openers: dict[str, Opener], plan: TimingPlan, loads: int) -> list[dict[str, TimedCase]]:
    """In-process loads: each opens every case anew, in an order that alternates from load to load, and times
    them interleaved, ``plan.iterations`` rounds shared out over the loads; a load's cases go before the next's."""
    names = list(openers)
    per_load = []
    for k, rounds in enumerate(rounds_per_load(plan.iterations, loads)):
        opened = {n: openers[n]() for n in rotated(names, k)}
        timed = run_interleaved({n: opened[n] for n in names}, replace(plan, iterations=rounds))
        del opened
        per_load.append(timed)
    return per_load


def pool_case(per_load: list[dict[str, TimedCase]], name: str, first: str) -> Pooled:
    """Case ``name`` over every load, its ratio taken to case ``first``."""
    return pool_loads([load[name].samples_ms for load in per_load], [load[name].rounds_ms for load in per_load],
                      [load[first].rounds_ms for load in per_load])
