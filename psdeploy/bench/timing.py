"""Interleaved timing: every case runs once per round, so machine noise hits all alike.

Warm-up runs rounds until each case's recent latencies settle (or a cap), then the
timed rounds rotate the order so no case always runs first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from psdeploy.bench.stats import LatencyStats


@dataclass
class TimingPlan:
    warmup: int = 10  # minimum warm-up rounds
    max_warmup: int = 100  # cap when latencies keep drifting
    iterations: int = 50  # timed rounds (every case once each)
    min_seconds: float = 0.0  # keep timing rounds until this much time has passed
    settle_pct: float = 5.0  # warm-up ends when the last-window median moves less than this


@dataclass
class TimedCase:
    name: str
    samples_ms: list[float] = field(default_factory=list)

    @property
    def stats(self) -> LatencyStats:
        return LatencyStats.from_samples(self.samples_ms)


def _once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def _settled(history: list[float], window: int, pct: float) -> bool:
    if len(history) < 2 * window:
        return False
    prev, last = np.median(history[-2 * window:-window]), np.median(history[-window:])
    return abs(last - prev) / prev * 100 < pct


def run_interleaved(
    cases: dict[str, Callable[[], object]],
    plan: TimingPlan,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, TimedCase]:
    names = list(cases)
    warm: dict[str, list[float]] = {n: [] for n in names}
    window = max(3, plan.warmup // 2)
    for round_ in range(plan.max_warmup):
        for n in names:
            warm[n].append(_once(cases[n]))
        if round_ + 1 >= plan.warmup and all(_settled(warm[n], window, plan.settle_pct) for n in names):
            break
    timed = {n: TimedCase(n) for n in names}
    start = time.perf_counter()
    round_ = 0
    while round_ < plan.iterations or time.perf_counter() - start < plan.min_seconds:
        shift = round_ % len(names)
        for n in names[shift:] + names[:shift]:
            timed[n].samples_ms.append(_once(cases[n]))
        round_ += 1
        if progress:
            progress(round_, plan.iterations)
    return timed
