"""ONNX -> Relax -> tuned -> built TVM module, for llvm and cuda.

We import the verified ONNX rather than re-tracing PyTorch through Relax's torch
frontend: every backend then compiles the very graph onnxruntime already checked
(the same Conv/Gather/Add nodes), so backends are compared like for like, and a
user can compile an ONNX file without the checkpoint at hand.
"""

from __future__ import annotations

from pathlib import Path

from psdeploy.backends.artifact import KernelWork, TuningSummary
from psdeploy.backends.base import BuildOptions
from psdeploy.backends.targets import Target
from psdeploy.backends.tvm.layout import NCHW, ConvLayout
from psdeploy.backends.tvm.tuning import tune
from psdeploy.backends.tvm.tuning_db import TuningDatabase
from psdeploy.errors import PsdeployError


def import_onnx(path: Path, input_shape: tuple[int, ...], layout: ConvLayout = NCHW):
    """The ONNX file as Relax; PSConv nodes as placeholder convs where the layout passes will block them."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    from psdeploy.backends.tvm.fused import psconv_importable

    model = onnx.load(str(path))
    with psconv_importable(placeholders=layout.name == "nchwc"):
        return from_onnx(model, shape_dict={model.graph.input[0].name: list(input_shape)}, keep_params_in_input=False)


def pre_tuning_passes(winograd_tile: int = 0, layout: ConvLayout = NCHW, device: str = "cpu"):
    """The Relax passes before tuning, as data: convs to ``layout``, legalize to TIR (Winograd convs
    if asked), fold, fuse.

    The same passes as Relax's "zero" pipeline, spelled out so layouts and legalizations can be chosen.
    """
    from tvm import relax

    from psdeploy.backends.tvm.layout import blocked_conv_legalization, layout_passes
    from psdeploy.backends.tvm.take import use_baked_take
    from psdeploy.backends.tvm.winograd import winograd_legalize

    use_baked_take()
    legalize = {}
    if layout.name == "nchwc":
        legalize["relax.nn.conv2d"] = blocked_conv_legalization(winograd_tile)
    elif winograd_tile:
        legalize["relax.nn.conv2d"] = winograd_legalize(winograd_tile, device)
    t = relax.transform
    return [
        *layout_passes(layout),
        t.DecomposeOpsForInference(),
        t.CanonicalizeBindings(),
        t.FoldConstant(),  # the importer's in-graph wrap of Gather indices: constants to bake (take.py)
        t.LegalizeOps(customize_legalize_map=legalize),
        t.AnnotateTIROpPattern(),
        t.FoldConstant(),
        t.FuseOps(),
        t.FuseTIR(),
    ]


def post_tuning_passes(target: Target):
    """Apply tuned schedules; on GPU give every function still unscheduled dlight's default."""
    from tvm import relax
    from tvm.s_tir import dlight

    passes = [relax.transform.MetaScheduleApplyDatabase(enable_warning=False)]
    if target.device == "cuda":
        passes.append(dlight.ApplyDefaultSchedule(dlight.gpu.Fallback()))
    return passes


def lower(mod, target: Target, winograd_tile: int = 0, layout: ConvLayout = NCHW):
    import tvm

    with tvm.target.Target(target.tvm_target):
        return tvm.transform.Sequential(pre_tuning_passes(winograd_tile, layout, target.device))(mod)


def build(onnx_path: Path, input_shape: tuple[int, ...], target: Target, options: BuildOptions, out_file: Path,
          winograd_tile: int = 0, layout: ConvLayout = NCHW) -> tuple[TuningSummary, dict[str, KernelWork]]:
    """Import, lower, tune, apply, compile and export the library to ``out_file``; what each kernel computes."""
    import tvm

    from psdeploy.backends.tvm.kernels import kernel_work

    mod = lower(import_onnx(onnx_path, input_shape, layout), target, winograd_tile, layout)
    database, summary = tune(mod, target, TuningDatabase(options.tuning_db, target), options.tune_trials,
                             options.tune_time_s, options.rpc, options.on_batch)
    kernels = kernel_work(mod)  # read before scheduling, where each kernel's computation is still one block
    tvm_target = tvm.target.Target(target.tvm_target)
    with tvm_target, database:
        mod = tvm.transform.Sequential(post_tuning_passes(target))(mod)
    try:
        executable = tvm.compile(mod, target=tvm_target)
        executable.export_library(str(out_file))
    except Exception as exc:
        raise PsdeployError(f"TVM failed to build for {target.tvm_target}: {str(exc).strip().splitlines()[-1]}") from None
    return summary, kernels
