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
