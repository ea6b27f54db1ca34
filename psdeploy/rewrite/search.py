"""``--lowering auto``: per distinct PSConv geometry, time each lowering on the target and keep the fastest.

Each candidate is verified on the backend before it is timed; the candidates of one
geometry run interleaved with the plain 3x3 of the same shape, whose time gives the
ratio that the manifest and the report carry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from psdeploy.arch.psconv import PSGConv2d
from psdeploy.bench.timing import TimingPlan, run_interleaved
from psdeploy.errors import PsdeployError
from psdeploy.probe import probe
from psdeploy.rewrite.lattice import PSConvLayer
from psdeploy.rewrite.lowerings import LOWERINGS, get_lowering

SEARCH_PLAN = TimingPlan(warmup=5, max_warmup=20, iterations=30)


@dataclass(frozen=True)
class Geometry:
    channels: int
    groups: int
    stride: int
    height: int
    width: int
    clean: bool

    @property
    def label(self) -> str:
        return f"{self.channels}@{self.height}x{self.width} s{self.stride} g{self.groups}" + ("" if self.clean else " dense-d1")


@dataclass
class SearchRow:
    geometry: str
    layers: list[str]
    lowering: str  # the winner
    timings_ms: dict[str, float]  # lowering (and "plain") -> median ms
    ratio_to_plain: float


def layer_geometries(model: nn.Module, input_shape: tuple[int, ...]) -> dict[Geometry, list[tuple[str, PSGConv2d]]]:
    """Distinct (channels, input size, stride, groups, cleanliness) of the PSConv layers, in order."""
    found: dict[Geometry, list[tuple[str, PSGConv2d]]] = {}

    def visit(name: str, mod: PSGConv2d, inputs: tuple, output: torch.Tensor) -> None:
        _, c, h, w = inputs[0].shape
        clean = PSConvLayer.from_released(name, mod).is_clean
        found.setdefault(Geometry(c, mod.groups, mod.stride, h, w, clean), []).append(
            (name.removesuffix(".conv2"), mod))

    probe(model, input_shape, (PSGConv2d,), visit)
    return found


def candidate_lowerings(backend: str) -> list[str]:
    """Lowerings worth timing on ``backend``: TVM-only ones only where TVM compiles them."""
    from psdeploy.report.backends import is_tvm

    return [name for name, lowering in LOWERINGS.items() if is_tvm(backend) or not lowering.tvm_only]


def search_lowerings(model: nn.Module, input_shape: tuple[int, ...], backend: str, threads: int,
                     candidates: list[str] | None = None, **backend_options) -> tuple[dict[str, str], list[SearchRow]]:
    """(layer name -> lowering, one row per geometry) for ``backend`` (a report backend name)."""
    from psdeploy.report.backends import prepare

    names = candidates or candidate_lowerings(backend)
    choices: dict[str, str] = {}
    rows = []
    for geometry, members in layer_geometries(model, input_shape).items():
        layer = PSConvLayer.from_released("search", members[0][1])
        shape = (input_shape[0], geometry.channels, geometry.height, geometry.width)
        plain = nn.Conv2d(geometry.channels, geometry.channels, 3, geometry.stride, 1, groups=geometry.groups,
                          bias=False).eval()
        cases = {"plain": prepare(plain, plain, shape, backend, threads, "plain", **backend_options)}
        for name in names:
            lowered = get_lowering(name).lower(layer, torch.zeros(geometry.channels))
            reference = LoweredReference(layer, lowered.in_order, lowered.out_order)
            cases[name] = prepare(lowered.module, reference, shape, backend, threads, name, **backend_options)
        timed = run_interleaved({k: v.run for k, v in cases.items()}, SEARCH_PLAN)
        medians = {k: t.stats.median_ms for k, t in timed.items()}
        best = min(names, key=lambda n: medians[n])
        rows.append(SearchRow(geometry.label, [m for m, _ in members], best, medians, medians[best] / medians["plain"]))
        choices.update({m: best for m, _ in members})
    if not rows:
        raise PsdeployError("--lowering auto: the model has no PSConv layer to search over")
    return choices, rows


class LoweredReference(nn.Module):
    """The lattice's function in a lowered form's channel orders: what that lowering must equal.

    In a network these orders fold into the neighbouring convs; a layer checked on its own
    needs them explicit."""

    def __init__(self, layer: PSConvLayer, in_order, out_order) -> None:
        super().__init__()
        from psdeploy.rewrite.fold import block_order_to_channels

        s = layer.shape
        self.layer = layer
        self.perm_in = torch.argsort(block_order_to_channels(list(in_order), s.groups, s.in_block))
        self.perm_out = block_order_to_channels(list(out_order), s.groups, s.out_block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.forward(x[:, self.perm_in])[:, self.perm_out]


def rows_as_dicts(rows: list[SearchRow]) -> list[dict[str, object]]:
    return [asdict(r) for r in rows]
