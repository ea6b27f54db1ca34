"""What every backend offers: build an artifact from verified ONNX, open it as a runner, profile it.

A backend is one small object per runtime (onnxruntime, OpenVINO, TVM); the registry in
``psdeploy.backends`` is the only place that maps names to them. Build options a backend
does not understand are refused by that backend, never silently ignored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from psdeploy.backends.int8 import QuantizationRecord
from psdeploy.backends.targets import Target
from psdeploy.backends.tune_options import DEFAULT_TUNING_DB, RpcTracker
from psdeploy.bounds import LAYOUTS, PRECISIONS, TUNE_TRIALS, WINOGRAD
from psdeploy.calibration import DIGITS, CalibrationSet
from psdeploy.errors import PsdeployError
from psdeploy.export.counts import ConvKey
from psdeploy.export.node_names import layer_of
from psdeploy.rewrite.lowerings import LOWERINGS
from psdeploy.parity.compare import Runner


@dataclass(frozen=True)
class BuildOptions:
    """How to build, beyond the target itself. Each ``flag`` is how users set the option (and what a backend
    that refuses it names); each backend declares which options it uses (``Backend.uses_options``), and any
    other set to a non-default value is refused."""

    # f32 kept, or reduced on request (each backend declares the precisions it builds: ``Backend.precisions``)
    precision: str = field(default="f32", metadata={"flag": "--precision"})
    # int8: the data post-training quantization calibrates on (and the accuracy gate checks on)
    calibration: CalibrationSet | None = field(default=None, metadata={"flag": "--calibration"})
    # TVM: Winograd F(2x2,3x3) / F(4x4,3x3) for every eligible conv
    winograd: str = field(default="off", metadata={"flag": "--winograd"})
    # TVM: the data layout convs compile in; None: the target's measured default
    layout: str | None = field(default=None, metadata={"flag": "--layout"})
    # TVM: MetaSchedule trials in total (with tune_time_s: a cap)
    tune_trials: int = field(default=0, metadata={"flag": "--tune-trials"})
    # TVM: a deadline for tuning, in seconds of wall time
    tune_time_s: float | None = field(default=None, metadata={"flag": "--tune-time"})
    # TVM: with no budget, build the tasks the database lacks untuned (else the build is refused)
    untuned: bool = field(default=False, metadata={"flag": "--untuned"})
    # TVM: measure candidates on the tracker's servers instead of here
    rpc: RpcTracker | None = field(default=None, metadata={"flag": "--rpc"})
    # TVM: the tuning database root
    tuning_db: Path = field(default=DEFAULT_TUNING_DB, metadata={"flag": "--tuning-db"})
    on_batch: Callable[[int], None] | None = field(default=None, compare=False)  # tuning progress hook

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise PsdeployError(f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.winograd not in WINOGRAD:
            raise PsdeployError(f"--winograd {self.winograd!r}: expected one of {', '.join(WINOGRAD)}")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise PsdeployError(f"--layout {self.layout!r}: expected one of {', '.join(LAYOUTS)}")
        if self.precision == "int8" and self.calibration is None:
            raise PsdeployError(f"--precision int8: needs --calibration DATA (a .npy array N,C,H,W, a folder of .npy "
                                f"files, or '{DIGITS}')")
        if self.calibration is not None and self.precision != "int8":
            raise PsdeployError(f"--calibration {self.calibration.source}: calibrates int8 builds; expected "
                                f"--precision int8 with it")
        TUNE_TRIALS.check(self.tune_trials)
        if self.tune_time_s is not None and self.tune_time_s <= 0:
            raise PsdeployError(f"--tune-time {self.tune_time_s:g}s: expected a positive duration")
        if self.untuned and self.tunes:
            raise PsdeployError("--untuned: builds the tasks the tuning database lacks untuned, without tuning; "
                                "give it or a --tune-trials/--tune-time budget, not both")
        if self.rpc is not None and not self.tunes:
            raise PsdeployError(f"--rpc {self.rpc.address}: measures tuning candidates; give --tune-trials or "
                                f"--tune-time too")

    def set_options(self) -> dict[str, str]:
        """Option name -> how it reads on the command line (``--layout nhwc``), for those not at their default."""
        shown = {"tune_time_s": lambda v: f"{v:g}s", "rpc": lambda v: v.address, "calibration": lambda v: v.source,
                 "untuned": lambda v: ""}
        return {f.name: f"{f.metadata['flag']} {shown.get(f.name, str)(getattr(self, f.name))}".rstrip()
                for f in fields(self) if "flag" in f.metadata and getattr(self, f.name) != f.default}

    @property
    def tunes(self) -> bool:
        """Whether MetaSchedule tunes at all (a trial budget, a time budget, or both)."""
        return self.tune_trials > 0 or self.tune_time_s is not None


@dataclass
class OpenedRunner:
    """A deployable thing, open and ready: ``run(x) -> outputs``."""

    run: Runner
    description: str
    input_shape: tuple[int, ...]  # 0 where dynamic
    output_names: list[str]
    quantization: QuantizationRecord | None = None  # an int8 build's: which convs run int8

    @property
    def batch(self) -> int:
        return self.input_shape[0] or 1


@dataclass
class NodeTime:
    """One row of a profile: an operator type or one node, with the kernel the runtime chose."""

    name: str
    op_type: str
    kernel: str
    ms_per_run: float
    calls_per_run: float
    share: float = 0.0  # of the summed time


@dataclass
class ConvTime:
    """Time and work of the convs under one key, in one profile."""

    key: ConvKey
    ms_per_run: float = 0.0
    calls_per_run: float = 0.0
    flops_per_run: float = 0.0  # two per multiply-add

    @property
    def gflops(self) -> float:
        return self.flops_per_run / (self.ms_per_run * 1e6) if self.ms_per_run > 0 else 0.0


def per_conv(times: list[ConvTime]) -> list[ConvTime]:
    """Summed per key, slowest first."""
    out: dict[ConvKey, ConvTime] = {}
    for t in times:
        total = out.setdefault(t.key, ConvTime(t.key))
        total.ms_per_run += t.ms_per_run
        total.calls_per_run += t.calls_per_run
        total.flops_per_run += t.flops_per_run
    return sorted(out.values(), key=lambda t: -t.ms_per_run)


# the nodes that only convert between plain and blocked layouts, in each runtime's executed graph
LAYOUT_REORDERS = frozenset({"Reorder", "ReorderInput", "ReorderOutput"})


@dataclass
class Profile:
    """Where one model's time goes on one runtime, node by node (slowest first)."""

    model: str
    runs_on: str
    batch: int
    runs: int
    nodes: list[NodeTime]
    convs: list[ConvTime] = field(default_factory=list)  # per conv key, where the runtime's nodes can be placed

    def by_op_type(self, split_kernels: bool = True) -> list[NodeTime]:
        """Summed per operator type and kernel (e.g. GroupConvolution on brgconv_avx2_f32), or per type only
        (two models may run one type on different kernels)."""
        groups: dict[tuple[str, str], NodeTime] = {}
        for r in self.nodes:
            kernel = r.kernel if split_kernels else ""
            t = groups.setdefault((r.op_type, kernel), NodeTime(r.op_type, r.op_type, kernel, 0.0, 0.0))
            t.ms_per_run += r.ms_per_run
            t.calls_per_run += r.calls_per_run
            t.share += r.share
        return sorted(groups.values(), key=lambda r: -r.ms_per_run)

    def by_layer(self) -> list[NodeTime]:
        """Summed per network layer (``stages.0.1.conv2``: a PSConv layer in PS-ResNets), from the module
        paths psdeploy's exports put in node names; nodes the runtime added sit under '(runtime)'. ``op_type``
        lists the operator types run for the layer."""
        groups: dict[str, NodeTime] = {}
        for r in self.nodes:
            layer = layer_of(r.name) or "(runtime)"
            t = groups.setdefault(layer, NodeTime(layer, "", "", 0.0, 0.0))
            t.op_type = "+".join(sorted({*filter(None, t.op_type.split("+")), r.op_type}))
            t.ms_per_run += r.ms_per_run
            t.calls_per_run += r.calls_per_run
            t.share += r.share
        return sorted(groups.values(), key=lambda r: -r.ms_per_run)

    @property
    def total_ms(self) -> float:
        return sum(r.ms_per_run for r in self.nodes)

    def beside(self, other: Profile) -> list[tuple[ConvTime, ConvTime | None, float | None]]:
        """Each of this profile's convs with the same conv (output and reduction) in ``other``, and this one's
        share of the other's speed (other's ms / this one's; None where ``other`` has no such conv)."""
        theirs = {t.key: t for t in other.convs}
        rows = []
        for mine in self.convs:
            match = theirs.get(mine.key)
            rows.append((mine, match, match.ms_per_run / mine.ms_per_run if match and mine.ms_per_run > 0 else None))
        return rows

    @property
    def layout_reorders(self) -> tuple[float, float]:
        """(reorder nodes run per inference, their ms per inference)."""
        reorders = [r for r in self.nodes if r.op_type in LAYOUT_REORDERS]
        return sum(r.calls_per_run for r in reorders), sum(r.ms_per_run for r in reorders)


def summed(rows: list[NodeTime]) -> list[NodeTime]:
    """Shares filled in, slowest first."""
    total = sum(r.ms_per_run for r in rows) or 1.0
    for r in rows:
        r.share = r.ms_per_run / total
    return sorted(rows, key=lambda r: -r.ms_per_run)


def median_profile(profiles: list[Profile]) -> Profile:
    """One model's profiles from several loads as one: each node's and each conv's median time (0 in a load
    that did not run it), so one slow load moves no row."""
    def median(values: list[float]) -> float:
        return float(np.median(values + [0.0] * (len(profiles) - len(values))))

    nodes: dict[str, list[NodeTime]] = {}
    convs: dict[ConvKey, list[ConvTime]] = {}
    for p in profiles:
        for r in p.nodes:
            nodes.setdefault(r.name, []).append(r)
        for c in p.convs:
            convs.setdefault(c.key, []).append(c)
    first = profiles[0]
    rows = [NodeTime(name, rs[0].op_type, rs[0].kernel, median([r.ms_per_run for r in rs]),
                     median([r.calls_per_run for r in rs])) for name, rs in nodes.items()]
    conv_rows = [ConvTime(key, median([c.ms_per_run for c in cs]), cs[0].calls_per_run, cs[0].flops_per_run)
                 for key, cs in convs.items()]
    return Profile(first.model, first.runs_on, first.batch, first.runs * len(profiles), summed(rows),
                   sorted(conv_rows, key=lambda c: -c.ms_per_run))


class Backend(ABC):
    name: str = ""
    module_file: str = ""  # the artifact's module inside its directory
    native_ops: frozenset[str] = frozenset()  # custom ONNX ops ("domain::type") it compiles as such
    # What export/compile give this runtime when no --lowering is named: its fastest whole-network form as
    # measured (``psdeploy bench`` of every lowering, interleaved); ``auto`` searches per layer instead.
    default_lowering: str = "grouped"
    int8_lowering: str | None = None  # where int8's fastest form differs (measured the same way, at int8)
    uses_options: frozenset[str] = frozenset()  # the ``BuildOptions`` it reads; any other set is refused
    precisions: tuple[str, ...] = ("f32",)  # the ``--precision`` values it builds
    keeps_dynamic_batch: bool = False  # a dynamic-batch ONNX gives an artifact that runs any batch

    def precisions_here(self) -> tuple[str, ...]:
        """Those of ``precisions`` this machine runs (a CPU without bf16 units builds but cannot run bf16)."""
        return self.precisions

    def default_lowering_at(self, precision: str) -> str:
        """The form compile gives this runtime at ``precision`` when no --lowering is named."""
        return self.int8_lowering if precision == "int8" and self.int8_lowering else self.default_lowering

    @abstractmethod
    def require(self) -> None:
        """Raise a ``PsdeployError`` naming the pip extra if the runtime is not installed."""

    def check_options(self, target: Target, options: BuildOptions) -> None:
        """Refuse every option set that this backend does not use, so none is silently ignored."""
        unused = [given for name, given in options.set_options().items() if name not in self.uses_options]
        if unused:
            own = [f.metadata["flag"] for f in fields(BuildOptions) if f.name in self.uses_options]
            raise PsdeployError(f"{', '.join(unused)}: not {'an option' if len(unused) == 1 else 'options'} of "
                                f"{target.name} ({'its options: ' + ', '.join(own) if own else 'it has none'})")
        if options.precision not in self.precisions:
            raise PsdeployError(f"--precision {options.precision}: not a precision {target.name} builds "
                                f"(expected one of {', '.join(self.precisions)})")

    def layout(self, target: Target, options: BuildOptions) -> str | None:
        """The data layout the artifact computes convs in, when the backend lets it be chosen."""
        return None

    @abstractmethod
    def build(self, onnx_path: Path, input_shape: tuple[int, ...], target: Target, options: BuildOptions,
              out_dir: Path) -> dict[str, object] | None:
        """Write ``out_dir / module_file`` from the verified ONNX; return the manifest fields it fills in."""

    @abstractmethod
    def open(self, module: Path, target: Target, threads: int | None = None,
             precision: str = "f32") -> tuple[Runner, str]:
        """A runner over a built module (for onnxruntime, any ONNX file), and what it runs as."""

    @abstractmethod
    def profile(self, module: Path, target: Target, x: np.ndarray, runs: int,
                threads: int | None = None, precision: str = "f32") -> tuple[list[NodeTime], str]:
        """Per-node time of ``runs`` runs on ``x`` after a warm-up, from the runtime's own counters, and what
        the module ran as."""

    def conv_keys(self, module: Path) -> dict[str, ConvKey]:
        """Node name -> the conv it computes, for each conv node of a module this backend built, so a profile
        sets its conv nodes beside another runtime's; empty where the module's nodes are not ONNX-named convs."""
        return {}

    def native_lowerings(self) -> list[str]:
        """Lowerings whose graphs run here as intended: every custom op they emit is compiled as such
        (elsewhere a custom op runs its ONNX function body, an exact but slow definition)."""
        return [name for name, lowering in LOWERINGS.items() if lowering.custom_ops <= self.native_ops]
