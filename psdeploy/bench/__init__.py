"""Bench step: latency of deployable models over several fresh loads, interleaved within each.

Each load is a new process that opens every model and times them round-robin (``load.py``):
interleaving cancels drift within a load, and several loads show what one load cannot, a
model whose speed depends on the process it was loaded in. Loads alternate which model is
opened and run first. A model's figures pool every load's samples; its ratio to the first
model is the median of per-round ratios over all loads, with the p10-p90 band of those
rounds (the spread within a load) beside the lowest and highest per-load ratio (the spread
across loads) and its speed modes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from psdeploy.backends import model_input_shape
from psdeploy.bench.environment import fingerprint
from psdeploy.bench.load import LoadRequest, run_load
from psdeploy.bench.stats import LatencyStats, LoadMode, load_modes, ratio_spread
from psdeploy.bench.timing import TimedCase, TimingPlan
from psdeploy.bounds import check_memory
from psdeploy.errors import PsdeployError

MIN_ROUNDS_PER_LOAD = 5  # a load's own median and ratio need that many


@dataclass
class BenchRow:
    name: str
    batch: int
    stats: LatencyStats
    samples_ms: list[float]
    ratio: float | None = None  # median of per-round ratios to the first case, over every load
    ratio_band: tuple[float, float] | None = None  # p10-p90 of those rounds: the spread within a load
    runs_on: str = ""  # what the runtime reports it ran as (TVM: with the threads its runtime really started)
    load_medians_ms: list[float] = field(default_factory=list)  # one per load
    load_ratios: list[float] = field(default_factory=list)  # the median per-round ratio of each load
    modes: list[LoadMode] = field(default_factory=list)

    @property
    def load_dependent(self) -> bool:
        return len(self.modes) > 1


@dataclass
class BenchResult:
    rows: list[BenchRow]
    plan: TimingPlan
    loads: int
    environment: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"environment": self.environment, "loads": self.loads, "rows": [
            {"model": r.name, "batch": r.batch, **r.stats.to_dict(), "ratio_to_first": r.ratio,
             "ratio_p10_p90": r.ratio_band, "load_ratios": r.load_ratios, "load_medians_ms": r.load_medians_ms,
             "modes": [asdict(m) for m in r.modes], "load_dependent": r.load_dependent, "runs_on": r.runs_on}
            for r in self.rows]}


def _check_batch(shape: tuple[int, ...], batch: int, source: str) -> None:
    """Refuse a batch the model cannot run, or whose input would not fit in memory."""
    if shape[0] and shape[0] != batch:
        raise PsdeployError(f"{source}: compiled for batch {shape[0]}, cannot run --batch {batch}; "
                            f"compile with that batch or export with --dynamic-batch")
    check_memory(f"--batch {batch}", (batch, *shape[1:]))


def rounds_per_load(iterations: int, loads: int) -> list[int]:
    """``iterations`` timed rounds shared out over ``loads``, each at least ``MIN_ROUNDS_PER_LOAD``."""
    if iterations < loads * MIN_ROUNDS_PER_LOAD:
        raise PsdeployError(f"--loads {loads}: {iterations} timed rounds give fewer than {MIN_ROUNDS_PER_LOAD} per "
                            f"load; expected --iters of at least {loads * MIN_ROUNDS_PER_LOAD}, or fewer loads")
    return [iterations // loads + (k < iterations % loads) for k in range(loads)]


def _row(path: str, batch: int, per_load: list[dict[str, TimedCase]], first: str, runs_on: str) -> BenchRow:
    def pooled(attr: str, of: str) -> list[float]:
        return [s for load in per_load for s in getattr(load[of], attr)]

    samples = pooled("samples_ms", path)
    ratio, lo, hi = ratio_spread(pooled("rounds_ms", path), pooled("rounds_ms", first))
    load_medians = [float(np.median(load[path].samples_ms)) for load in per_load]
    load_ratios = [ratio_spread(load[path].rounds_ms, load[first].rounds_ms)[0] for load in per_load]
    return BenchRow(Path(path).name, batch, LatencyStats.from_samples(samples), samples, ratio, (lo, hi), runs_on,
                    load_medians, load_ratios, load_modes(load_medians))


def bench_models(paths: list[str], batches: list[int], plan: TimingPlan, threads: int | None,
                 progress=None, loads: int = 1) -> BenchResult:
    """Every model at every batch, over ``loads`` fresh processes, interleaved round-robin within each."""
    shares = rounds_per_load(plan.iterations, loads)
    if len({Path(p).name for p in paths}) != len(paths):
        raise PsdeployError("bench: two models share a file name; copy one under another name")
    shapes = {p: model_input_shape(p) for p in paths}
    for batch in batches:  # every batch checked before any is timed
        for path in paths:
            _check_batch(shapes[path], batch, path)
    rows: list[BenchRow] = []
    for batch in batches:
        per_load: list[dict[str, TimedCase]] = []
        runs_on: dict[str, str] = {}
        done = 0
        for k, rounds in enumerate(shares):
            order = paths[k % len(paths):] + paths[:k % len(paths)]  # who is opened and run first alternates
            request = LoadRequest(paths=order, batch=batch, plan=asdict(plan) | {"iterations": rounds},
                                  threads=threads)

            def advance(n: int, _: int, before: int = done) -> None:
                if progress:
                    progress(before + n, plan.iterations)

            timed, runs_on = run_load(request, advance)
            per_load.append(timed)
            done += rounds
        rows.extend(_row(p, batch, per_load, paths[0], runs_on[p]) for p in paths)
    return BenchResult(rows, plan, loads, fingerprint(threads))
