"""Bench step: interleaved latency of deployable models, with statistics and fingerprint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from psdeploy.backends import open_runner
from psdeploy.bench.environment import fingerprint
from psdeploy.bench.stats import LatencyStats, ratio_spread
from psdeploy.bench.timing import TimingPlan, run_interleaved
from psdeploy.bounds import check_memory
from psdeploy.errors import PsdeployError
from psdeploy.parity.compare import make_input


@dataclass
class BenchRow:
    name: str
    batch: int
    stats: LatencyStats
    samples_ms: list[float]
    ratio: float | None = None  # median of per-round ratios to the first case
    ratio_band: tuple[float, float] | None = None
    runs_on: str = ""  # what the runtime reports it ran as (TVM: with the threads its runtime really started)


@dataclass
class BenchResult:
    rows: list[BenchRow]
    plan: TimingPlan
    environment: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"environment": self.environment, "rows": [
            {"model": r.name, "batch": r.batch, **r.stats.to_dict(), "ratio_to_first": r.ratio,
             "ratio_p10_p90": r.ratio_band, "runs_on": r.runs_on} for r in self.rows]}


def _check_batch(shape: tuple[int, ...], batch: int, source: str) -> None:
    """Refuse a batch the model cannot run, or whose input would not fit in memory."""
    if shape[0] and shape[0] != batch:
        raise PsdeployError(f"{source}: compiled for batch {shape[0]}, cannot run --batch {batch}; "
                            f"compile with that batch or export with --dynamic-batch")
    check_memory(f"--batch {batch}", (batch, *shape[1:]))


def bench_models(paths: list[str], batches: list[int], plan: TimingPlan, threads: int | None,
                 progress=None) -> BenchResult:
    """Every model at every batch, the models interleaved round-robin within each batch."""
    runners = [(p, open_runner(p, threads)) for p in paths]
    for batch in batches:  # every batch checked before any is timed
        for path, runner in runners:
            _check_batch(runner.input_shape, batch, path)
    rows: list[BenchRow] = []
    for batch in batches:
        cases = {}
        described = {}
        for path, runner in runners:
            x = make_input((batch, *runner.input_shape[1:]), seed=0)
            cases[f"{Path(path).name}"] = (lambda r=runner, x=x: r.run(x))
            described[Path(path).name] = runner.description
        if len(cases) != len(runners):
            raise PsdeployError("bench: two models share a file name; copy one under another name")
        timed = run_interleaved(cases, plan, progress)
        names = list(timed)
        base = timed[names[0]].samples_ms
        for name in names:
            ratio, lo, hi = ratio_spread(timed[name].samples_ms, base)
            rows.append(BenchRow(name, batch, timed[name].stats, timed[name].samples_ms, ratio, (lo, hi),
                                 described[name]))
    return BenchResult(rows, plan, fingerprint(threads))
