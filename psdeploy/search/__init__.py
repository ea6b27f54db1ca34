"""``--lowering auto``: per distinct PSConv geometry, time each lowering on the target and keep the fastest.

The search is handed the parsed target (and build options) whole, so candidates are
built exactly as the artifact will be: for the requested CPU, core count or CUDA arch.
Each candidate is verified on the backend before it is timed; the candidates of one
geometry run interleaved with the plain 3x3 of the same shape, whose time gives the
ratio that the manifest and the report carry, in ``SEARCH_LOADS`` loads of each (every
candidate opened anew), so that no choice rests on one load's speed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from psdeploy.arch.probe import probe
from psdeploy.arch.psconv import PSGConv2d
from psdeploy.backends import BuildOptions, Target, backend_for
from psdeploy.search.prepare import prepare_on_target
from psdeploy.bench.timing import TimingPlan, pool_case, run_loads
from psdeploy.errors import PsdeployError
from psdeploy.export.record import SearchRow
from psdeploy.rewrite.lattice import PSConvLayer
from psdeploy.rewrite.lowerings import LOWERINGS, LoweredReference, get_lowering

SEARCH_PLAN = TimingPlan(warmup=5, max_warmup=20, iterations=30)  # shared out over the loads
SEARCH_LOADS = 2


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


def candidate_lowerings(target: Target) -> list[str]:
    """Lowerings worth timing on ``target``: searchable ones its backend runs natively."""
    native = backend_for(target).native_lowerings()
    return [name for name in native if LOWERINGS[name].searchable]


def search_lowerings(model: nn.Module, input_shape: tuple[int, ...], target: Target, options: BuildOptions,
                     threads: int) -> tuple[dict[str, str], list[SearchRow]]:
    """(layer name -> lowering, one row per geometry), every candidate built and timed for ``target``."""
    names = candidate_lowerings(target)
    choices: dict[str, str] = {}
    rows = []
    for geometry, members in layer_geometries(model, input_shape).items():
        layer = PSConvLayer.from_released("search", members[0][1])
        shape = (input_shape[0], geometry.channels, geometry.height, geometry.width)
        plain = nn.Conv2d(geometry.channels, geometry.channels, 3, geometry.stride, 1, groups=geometry.groups,
                          bias=False).eval()
        with tempfile.TemporaryDirectory(prefix="psdeploy-search-") as scratch:
            cases = {"plain": prepare_on_target(plain, plain, shape, target, options, threads, "plain", Path(scratch))}
            for name in names:
                lowered = get_lowering(name).lower(layer, torch.zeros(geometry.channels))
                cases[name] = prepare_on_target(lowered.module, LoweredReference(layer, lowered), shape, target,
                                                options, threads, name, Path(scratch))
            per_load = run_loads({k: v.open for k, v in cases.items()}, SEARCH_PLAN, SEARCH_LOADS)
        medians = {k: pool_case(per_load, k, "plain").stats.median_ms for k in cases}
        best = min(names, key=lambda n: medians[n])
        rows.append(SearchRow(geometry=geometry.label, layers=[m for m, _ in members], lowering=best,
                              timings_ms=medians, ratio_to_plain=medians[best] / medians["plain"]))
        choices.update({m: best for m, _ in members})
    if not rows:
        raise PsdeployError("--lowering auto: the model has no PSConv layer to search over")
    return choices, rows
