"""Measure the Appendix G tables: every case verified, then timed interleaved per group."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from psdeploy.arch.registry import default_input_shape, get_config
from psdeploy.backends import backend_for
from psdeploy.bench.environment import fingerprint
from psdeploy.bench.stats import LoadMode, load_modes
from psdeploy.bench.timing import Opener, TimingPlan, pool_case, run_loads
from psdeploy.calibration import CalibrationSet
from psdeploy.export import AUTO
from psdeploy.parity import torch_runner
from psdeploy.progress import Progress
from psdeploy.report.cases import LayerSpec, ModuleCase, Role, layer_cases, network_cases
from psdeploy.report.config import Platform, ReportConfig, platforms
from psdeploy.rewrite.deploy import rewrite
from psdeploy.search import search_lowerings
from psdeploy.search.prepare import (
    build_on_target,
    export_case,
    on_input,
    prepare_eager,
    prepare_on_target,
    set_threads,
)
from psdeploy.verify.gate import accuracy_gate, synthetic_samples

# 2: a precision per measurement; reduced ones carry the gate's cosine, not parity; 3: several loads per case
SCHEMA = "psdeploy.report/3"


@dataclass
class Measurement:
    table: str  # "layer" or "network"
    backend: str
    group: str  # the interleaved group, e.g. "64@56 s1 b1" or "ps_resnet50 b1"
    case: str  # the case's label
    batch: int
    stats: dict[str, object]
    ratio: float  # median of per-round ratios to the group's baseline
    ratio_p10: float
    ratio_p90: float
    parity_rel_err: float | None  # f32: max|err|/max|ref| against the torch reference
    precision: str = "f32"
    mean_cosine: float | None = None  # reduced precision: the accuracy gate's mean cosine to the torch reference
    int8_convs: str | None = None  # int8: "34/34", the convs that run int8 of all convs
    role: str = Role.DEPLOYED.value
    lowering: str | None = None
    skipped: str | None = None
    chosen: str | None = None  # ``auto``: the lowerings its search kept on this backend, with layer counts
    load_ratios: list[float] = field(default_factory=list)  # each load's median ratio: the spread across loads
    load_medians_ms: list[float] = field(default_factory=list)

    @property
    def modes(self) -> list[LoadMode]:
        return load_modes(self.load_medians_ms)

    @property
    def images_per_s(self) -> float:
        return self.batch * 1e3 / float(self.stats["median_ms"])


@dataclass
class ReportData:
    config: ReportConfig
    environment: dict[str, object]
    measurements: list[Measurement] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # backend-precision pairs a backend does not build
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))


@dataclass
class Group:
    """Cases timed interleaved against the first (the plain baseline)."""

    table: str
    label: str
    batch: int
    shape: tuple[int, ...]
    cases: list[ModuleCase]


def _groups(config: ReportConfig) -> list[Group]:
    groups = []
    for channels, size in config.layer_shapes:
        for stride in config.layer_strides:
            for batch in config.layer_batches:
                spec = LayerSpec(channels, size, stride, batch)
                cases = layer_cases(spec, config.lowerings, reference_cases=config.layer_cases)
                groups.append(Group("layer", spec.label, batch, spec.shape, cases))
    for ps_arch, plain in config.network_pairs:
        cases = network_cases(ps_arch, plain, config.network_lowerings)
        for batch in config.network_batches:
            groups.append(Group("network", f"{ps_arch} b{batch}", batch,
                                default_input_shape(get_config(ps_arch), batch), cases))
    return groups


def _runs_on(group: Group, where: Platform, config: ReportConfig) -> bool:
    return group.table != "network" or config.network_backends is None or where.name in config.network_backends


def _timed_here(where: Platform, cases: list[ModuleCase]) -> list[ModuleCase]:
    """A lowering whose custom ops this backend does not compile runs its slow definition: not timed;
    ``auto`` is searched on a runtime, so eager PyTorch has none."""
    if where.target is None:
        return [c for c in cases if c.case.lowering != AUTO]
    native = {*backend_for(where.target).native_lowerings(), AUTO}
    return [c for c in cases if c.case.role is not Role.DEPLOYED or c.case.lowering in native]


def planned(config: ReportConfig, where: Platform) -> list[tuple[Group, list[ModuleCase]]]:
    """The groups ``run_report`` times on ``where``, each with the cases it builds there (what a bundle of the
    report builds instead, to time elsewhere)."""
    return [(group, _timed_here(where, group.cases)) for group in _groups(config) if _runs_on(group, where, config)]


def searched_case(module_case: ModuleCase, shape: tuple[int, ...], where: Platform, threads: int) -> tuple[ModuleCase, str]:
    """An ``auto`` case as ``--lowering auto`` builds it for ``where``: each layer geometry's lowering timed
    there, in fp32 as ``export`` searches. Returns the case and what the search kept ("sliced 13, aligned 3":
    lowering, layers)."""
    assert where.target is not None
    model = module_case.reference
    choices, _ = search_lowerings(model, shape, where.target, where.options, threads)
    kept = Counter(choices.values())
    summary = ", ".join(f"{name} {n}" for name, n in kept.most_common())
    return ModuleCase(module_case.case, rewrite(model, "grouped", choices).model, model), summary


@dataclass
class Checked:
    """A case ready to time on a platform, with how it was checked against its torch reference."""

    open: Opener  # a new load of the case, ready to run on its input
    parity_rel_err: float | None = None  # f32
    mean_cosine: float | None = None  # reduced precision (the accuracy gate)
    int8_convs: str | None = None


def _checked(module_case: ModuleCase, shape: tuple[int, ...], where: Platform, config: ReportConfig,
             onnx_path: Path | None, samples: CalibrationSet | None, directory: Path) -> Checked:
    """f32: built and held to fp32 parity; reduced precision: built (calibrated on ``samples`` for int8) and
    held to the report's accuracy gate on their held-out part."""
    label = module_case.case.label
    if where.target is None:
        ready = prepare_eager(module_case.module, module_case.reference, shape, config.threads, label)
        return Checked(ready.open, parity_rel_err=ready.parity.worst.rel_err)
    if samples is None:
        ready = prepare_on_target(module_case.module, module_case.reference, shape, where.target, where.options,
                                  config.threads, label, directory, onnx_path=onnx_path)
        return Checked(ready.open, parity_rel_err=ready.parity.worst.rel_err)
    options = replace(where.options, precision=where.precision,
                      calibration=samples if where.precision == "int8" else None)
    built = build_on_target(module_case.module, shape, where.target, options, directory, onnx_path)
    gate = accuracy_gate(built.open(config.threads), torch_runner(module_case.reference), samples, config.gate)
    counted = built.quantization
    return Checked(lambda: on_input(built.open(config.threads).run, shape), mean_cosine=gate.mean_cosine,
                   int8_convs=f"{counted.convs_int8}/{counted.convs}" if counted else None)


def run_report(config: ReportConfig) -> ReportData:
    set_threads(config.threads)
    built, left_out = platforms(config)
    data = ReportData(config, fingerprint(config.threads), left_out=left_out)
    plan = TimingPlan(config.warmup, config.max_warmup, config.iters, config.min_seconds)
    groups = _groups(config)
    exported: dict[tuple[str, str, str], Path] = {}  # (group, case, backend if searched) -> ONNX
    runs = [(where, group) for where in built for group in groups if _runs_on(group, where, config)]
    with (Progress("report", len(runs), "groups", transient=False) as progress,
          tempfile.TemporaryDirectory(prefix="psdeploy-report-") as scratch):
        for done, (where, group) in enumerate(runs):
            progress.update(done, stage=f"{where.name} {where.precision}: {group.label}")
            samples = synthetic_samples(group.shape) if where.precision != "f32" else None
            prepared: dict[str, tuple[ModuleCase, Checked]] = {}
            chosen: dict[str, str] = {}
            for module_case in _timed_here(where, group.cases):
                label = module_case.case.label
                if module_case.case.lowering == AUTO:
                    module_case, chosen[label] = searched_case(module_case, group.shape, where, config.threads)
                onnx_path = None
                if where.target is not None:
                    key = (group.label, label, where.name if label in chosen else "")
                    if key not in exported:
                        exported[key] = export_case(module_case.module, group.shape, Path(scratch))
                    onnx_path = exported[key]
                prepared[label] = (module_case, _checked(module_case, group.shape, where, config, onnx_path, samples,
                                                         Path(scratch)))
            per_load = run_loads({k: p.open for k, (_, p) in prepared.items()}, plan, config.loads)
            baseline = next(iter(prepared))
            for label, (case, ready) in prepared.items():
                pooled = pool_case(per_load, label, baseline)
                data.measurements.append(Measurement(
                    group.table, where.name, group.label, label, group.batch, pooled.stats.to_dict(), pooled.ratio,
                    *pooled.ratio_band, ready.parity_rel_err, where.precision, ready.mean_cosine, ready.int8_convs,
                    case.case.role.value, case.case.lowering, chosen=chosen.get(label),
                    load_ratios=pooled.load_ratios, load_medians_ms=pooled.load_medians_ms))
        progress.update(len(runs), stage="done")
    return data
