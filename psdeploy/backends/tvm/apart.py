"""A TVM module with its weights apart: ``main(x, w0, w1, ...)`` and the weights as arrays.

A module with its weights inlined carries them in its constant pool (a ResNet-50's ~100 MB);
a bundle ships module and weights apart (as tvmc shipped module and params), so that weights
can be checked by hash, or regenerated on the server instead of shipped. The build is the
artifact's own (same passes, same tuning database); only the float constants the passes left
(weights in their final, transformed form: folded, blocked, Winograd-transformed) become
trailing parameters of ``main``. Integer constants (gather indices) and small ones stay inline:
they are the module's structure, not weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psdeploy.backends.artifact import TuningSummary
from psdeploy.backends.base import BuildOptions
from psdeploy.backends.targets import Target
from psdeploy.backends.tvm.build import import_onnx, lower, post_tuning_passes
from psdeploy.backends.tvm.layout import ConvLayout
from psdeploy.backends.tvm.tuning import tune
from psdeploy.backends.tvm.tuning_db import TuningDatabase
from psdeploy.errors import PsdeployError

LIFT_MIN_ELEMENTS = 1024  # float constants this large or larger are weights; smaller ones stay in the module


def lift_weights(mod) -> tuple[object, list[np.ndarray]]:
    """``mod`` with main's large float constants turned into trailing parameters, and their values in order."""
    from tvm import relax

    weights: list[np.ndarray] = []
    lifted: dict[int, relax.Var] = {}

    @relax.expr_functor.mutator
    class Lift(relax.PyExprMutator):
        def visit_generic_const_(self, op):  # TVM 0.27's relax constants: a tensor payload with its type
            value = op.value.numpy()
            if value.dtype.kind != "f" or value.size < LIFT_MIN_ELEMENTS:
                return op
            key = op.__hash__()
            if key not in lifted:
                lifted[key] = relax.Var(f"w{len(weights)}", op.ty)
                weights.append(value)
            return lifted[key]

    main = mod["main"]
    body = Lift().visit_expr(main.body)
    params = [*main.params, *(lifted[k] for k in lifted)]
    out = mod.clone()
    out["main"] = relax.Function(params, body, is_pure=main.is_pure, attrs=main.attrs)
    return out, weights


@dataclass
class ApartBuild:
    summary: TuningSummary
    weights: list[np.ndarray]  # in main's parameter order, after the input
    lowered: object  # the Relax module with its weights lifted, before scheduling: what a CPU twin compiles


def build_apart(onnx_path: Path, input_shape: tuple[int, ...], target: Target, options: BuildOptions,
                out_file: Path, winograd_tile: int, layout: ConvLayout) -> ApartBuild:
    """The artifact's build (schedules from its tuning database, untuned where it lacks them), exported to
    ``out_file`` with its weights apart."""
    import tvm

    lowered, weights = lowered_apart(onnx_path, input_shape, target, winograd_tile, layout)
    database, summary = tune(lowered, target, TuningDatabase(options.tuning_db, target), 0, None, None, None)
    tvm_target = tvm.target.Target(target.tvm_target)
    with tvm_target, database:
        mod = tvm.transform.Sequential(post_tuning_passes(target))(lowered)
    _export(mod, tvm_target, out_file)
    return ApartBuild(summary, weights, lowered)


def lowered_apart(onnx_path: Path, input_shape: tuple[int, ...], target: Target, winograd_tile: int,
                  layout: ConvLayout) -> tuple[object, list[np.ndarray]]:
    """The graph through the build's passes (before scheduling), its weights lifted out."""
    return lift_weights(lower(import_onnx(onnx_path, input_shape, layout), target, winograd_tile, layout))


def compile_twin(lowered, out_file: Path) -> None:
    """``lowered`` compiled for this CPU with no schedule at all: slow, but the same computation over the same
    weights as the module built from it for another device, so it can compute what that module must output."""
    import tvm

    _export(lowered, tvm.target.Target("llvm"), out_file)


def _export(mod, tvm_target, out_file: Path) -> None:
    import tvm

    try:
        tvm.compile(mod, target=tvm_target).export_library(str(out_file))
    except Exception as exc:
        raise PsdeployError(f"TVM failed to build for {tvm_target}: {str(exc).strip().splitlines()[-1]}") from None
