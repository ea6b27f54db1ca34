"""Latency statistics, benchmark_app-style: median, p90, p99, min, mean, CV%."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

NOISY_CV_PCT = 10.0  # above this a figure is flagged in reports, never hidden


@dataclass
class LatencyStats:
    iterations: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    mean_ms: float
    cv_pct: float

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> LatencyStats:
        a = np.asarray(samples_ms, dtype=np.float64)
        mean = float(a.mean())
        return cls(len(a), float(np.median(a)), float(np.percentile(a, 90)), float(np.percentile(a, 99)),
                   float(a.min()), mean, float(a.std(ddof=1) / mean * 100) if len(a) > 1 and mean > 0 else 0.0)

    @property
    def noisy(self) -> bool:
        return self.cv_pct > NOISY_CV_PCT

    def to_dict(self) -> dict[str, float | int | bool]:
        return {**asdict(self), "noisy": self.noisy}


def ratio_spread(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Median ratio a/b of paired (same round) samples, with its 10th-90th percentile band."""
    r = np.asarray(a) / np.asarray(b)
    return float(np.median(r)), float(np.percentile(r, 10)), float(np.percentile(r, 90))


MODE_GAP_PCT = 4.0  # loads whose medians differ by more than this are in different modes


@dataclass
class LoadMode:
    median_ms: float  # the median of the loads' medians in this mode
    loads: int


@dataclass
class Pooled:
    """One case over several loads: its latency and its ratio to the first case, with both spreads."""

    stats: LatencyStats  # every timed run of every load
    ratio: float  # median of per-round ratios over every load
    ratio_band: tuple[float, float]  # p10-p90 of those rounds: the spread within a load
    load_medians_ms: list[float]
    load_ratios: list[float]  # each load's median per-round ratio: the spread across loads
    modes: list[LoadMode]

    @property
    def load_dependent(self) -> bool:
        return len(self.modes) > 1


def pool_loads(samples_ms: list[list[float]], rounds_ms: list[list[float]], first_rounds_ms: list[list[float]]
               ) -> Pooled:
    """A case's samples and per-round figures, one list per load, beside the first case's per-round figures."""
    rounds = [r for load in rounds_ms for r in load]
    ratio, lo, hi = ratio_spread(rounds, [r for load in first_rounds_ms for r in load])
    medians = [float(np.median(load)) for load in samples_ms]
    return Pooled(LatencyStats.from_samples([s for load in samples_ms for s in load]), ratio, (lo, hi), medians,
                  [ratio_spread(mine, first)[0] for mine, first in zip(rounds_ms, first_rounds_ms)],
                  load_modes(medians))


def load_modes(load_medians_ms: list[float]) -> list[LoadMode]:
    """Loads grouped into speed modes: sorted medians split wherever one is more than ``MODE_GAP_PCT`` above the
    one before. One mode: the model ran at one speed in every load; more: its speed depends on the load."""
    groups: list[list[float]] = []
    for median in sorted(load_medians_ms):
        if groups and median <= groups[-1][-1] * (1 + MODE_GAP_PCT / 100):
            groups[-1].append(median)
        else:
            groups.append([median])
    return [LoadMode(float(np.median(g)), len(g)) for g in groups]
