"""Measure the Appendix G tables: every case verified, then timed interleaved per group."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from psdeploy.arch.registry import default_input_shape, get_config
from psdeploy.bench.environment import fingerprint
from psdeploy.bench.stats import ratio_spread
from psdeploy.bench.timing import TimingPlan, run_interleaved
from psdeploy.report.backends import export_case, prepare, set_threads
from psdeploy.report.cases import LayerSpec, layer_modules, network_modules
from psdeploy.report.config import ReportConfig
from psdeploy.rewrite.lowerings import LOWERINGS
from psdeploy.rewrite.search import candidate_lowerings

SCHEMA = "psdeploy.report/1"


@dataclass
class Measurement:
    table: str  # "layer" or "network"
    backend: str
    group: str  # the interleaved group, e.g. "64@56 s1 b1" or "ps_resnet50 b1"
    case: str
    batch: int
    stats: dict[str, object]
    ratio: float  # median of per-round ratios to the group's baseline
    ratio_p10: float
    ratio_p90: float
    parity_rel_err: float
    skipped: str | None = None

    @property
    def images_per_s(self) -> float:
        return self.batch * 1e3 / float(self.stats["median_ms"])


@dataclass
class ReportData:
    config: ReportConfig
    environment: dict[str, object]
    measurements: list[Measurement] = field(default_factory=list)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def _groups(config: ReportConfig) -> list[tuple[str, str, int, dict]]:
    """(table, group label, batch, {case: (module, reference, shape)}) for everything to time."""
    groups = []
    for channels, size in config.layer_shapes:
        for stride in config.layer_strides:
            for batch in config.layer_batches:
                spec = LayerSpec(channels, size, stride, batch)
                mods = layer_modules(spec, config.lowerings, cases=config.layer_cases)
                groups.append(("layer", spec.label, batch, {k: (m, r, spec.shape) for k, (m, r) in mods.items()}))
    for ps_arch, plain in config.network_pairs:
        mods = network_modules(ps_arch, plain, config.network_lowering)
        for batch in config.network_batches:
            shape = default_input_shape(get_config(ps_arch), batch)
            groups.append(("network", f"{ps_arch} b{batch}", batch,
                           {k: (m, r, shape) for k, (m, r) in mods.items()}))
    return groups


def run_report(config: ReportConfig) -> ReportData:
    set_threads(config.threads)
    data = ReportData(config, fingerprint(config.threads))
    plan = TimingPlan(config.warmup, config.max_warmup, config.iters, config.min_seconds)
    groups = _groups(config)
    exported: dict[tuple[str, str], Path] = {}  # (group, case) -> ONNX, shared by the ONNX backends
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        overall = progress.add_task("report", total=len(groups) * len(config.backends))
        for backend in config.backends:
            for table, label, batch, cases in groups:
                progress.update(overall, description=f"{backend}: {label}")
                timed_here = candidate_lowerings(backend)
                prepared = {}
                for name, (module, reference, shape) in cases.items():
                    lowering = name.removeprefix("psconv_")
                    if lowering in LOWERINGS and lowering not in timed_here:
                        continue  # a TVM-only lowering: elsewhere its node runs the reference body
                    onnx_path = None
                    if backend != "torch":
                        if (label, name) not in exported:
                            exported[(label, name)] = export_case(module, shape)
                        onnx_path = exported[(label, name)]
                    prepared[name] = prepare(module, reference, shape, backend, config.threads, name,
                                             config.tvm_trials, Path(config.tvm_database), onnx_path=onnx_path)
                timed = run_interleaved({k: p.run for k, p in prepared.items()}, plan)
                baseline = timed[next(iter(timed))].samples_ms
                for name, case in timed.items():
                    r, lo, hi = ratio_spread(case.samples_ms, baseline)
                    data.measurements.append(Measurement(
                        table, backend, label, name, batch, case.stats.to_dict(), r, lo, hi,
                        prepared[name].parity.worst.rel_err))
                progress.advance(overall)
    return data
