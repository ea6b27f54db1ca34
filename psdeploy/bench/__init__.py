"""Bench step: latency of deployable models over several fresh loads, interleaved within each.

Each load is a new process that opens every model and times them round-robin (``load.py``):
interleaving cancels drift within a load, and several loads, one after another, show what one
load cannot: a model whose speed changes with the process or the period it runs in. Loads alternate which model is
opened and run first. A model's figures pool every load's samples; its ratio to the first
model is the median of per-round ratios over all loads, with the p10-p90 band of those
rounds (the spread within a load) beside the lowest and highest per-load ratio (the spread
across loads) and its speed modes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from psdeploy.backends import model_input_shape
from psdeploy.bench.environment import fingerprint
from psdeploy.bench.load import LoadRequest, run_load
from psdeploy.bench.stats import LatencyStats, Pooled
from psdeploy.bench.timing import TimedCase, TimingPlan, pool_case, rotated, rounds_per_load
from psdeploy.bounds import check_memory
from psdeploy.errors import PsdeployError


@dataclass
class BenchRow:
    name: str
    batch: int
    pooled: Pooled  # latency and ratio to the first model, over every load
    runs_on: str = ""  # what the runtime reports it ran as (TVM: with the threads its runtime really started)

    @property
    def stats(self) -> LatencyStats:
        return self.pooled.stats


@dataclass
class BenchResult:
    rows: list[BenchRow]
    plan: TimingPlan
    loads: int
    environment: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"environment": self.environment, "loads": self.loads, "rows": [
            {"model": r.name, "batch": r.batch, **r.stats.to_dict(), "ratio_to_first": r.pooled.ratio,
             "ratio_p10_p90": r.pooled.ratio_band, "load_ratios": r.pooled.load_ratios,
             "load_medians_ms": r.pooled.load_medians_ms, "modes": [asdict(m) for m in r.pooled.modes],
             "load_dependent": r.pooled.load_dependent, "runs_on": r.runs_on} for r in self.rows]}


def _check_batch(shape: tuple[int, ...], batch: int, source: str) -> None:
    """Refuse a batch the model cannot run, or whose input would not fit in memory."""
    if shape[0] and shape[0] != batch:
        raise PsdeployError(f"{source}: compiled for batch {shape[0]}, cannot run --batch {batch}; "
                            f"compile with that batch or export with --dynamic-batch")
    check_memory(f"--batch {batch}", (batch, *shape[1:]))


def _row(path: str, batch: int, per_load: list[dict[str, TimedCase]], first: str, runs_on: str) -> BenchRow:
    return BenchRow(Path(path).name, batch, pool_case(per_load, path, first), runs_on)


def bench_models(paths: list[str], batches: list[int], plan: TimingPlan, threads: int | None,
                 progress=None, loads: int = 1) -> BenchResult:
    """Every model at every batch, over ``loads`` fresh processes (each opens every model once and times the
    batches in turn), interleaved round-robin within each. ``progress(done, total)`` counts rounds over all."""
    shares = rounds_per_load(plan.iterations, loads)
    if len({Path(p).name for p in paths}) != len(paths):
        raise PsdeployError("bench: two models share a file name; copy one under another name")
    shapes = {p: model_input_shape(p) for p in paths}
    for batch in batches:  # every batch checked before any is timed
        for path in paths:
            _check_batch(shapes[path], batch, path)
    per_load: list[list[dict[str, TimedCase]]] = []  # load -> batch -> path -> timed
    done = 0
    for k, rounds in enumerate(shares):
        request = LoadRequest(paths=rotated(paths, k), batches=batches,  # who is opened and run first alternates
                              plan=asdict(plan) | {"iterations": rounds}, threads=threads)

        def advance(n: int, _: int, before: int = done) -> None:
            if progress:
                progress(before + n, plan.iterations * len(batches))

        timed, runs_on = run_load(request, advance)
        per_load.append(timed)
        done += rounds * len(batches)
    rows = [_row(p, batch, [load[b] for load in per_load], paths[0], runs_on[p])
            for b, batch in enumerate(batches) for p in paths]
    return BenchResult(rows, plan, loads, fingerprint(threads))
