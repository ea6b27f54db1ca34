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
from psdeploy.backends.tvm.layout import DEFAULT_LAYOUT, NCHW, ConvLayout
from psdeploy.backends.tvm.qdq import IntegerConvs, integer_convs_pass
from psdeploy.backends.tvm.requantize import requantization_pass
from psdeploy.backends.tvm.tuning import missing_tasks, tune
from psdeploy.backends.tvm.tuning_db import RECORDS, TuningDatabase
from psdeploy.errors import PsdeployError
from psdeploy.export.record import ExportRecord


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


def lower(mod, target: Target, winograd_tile: int = 0, layout: ConvLayout = NCHW,
          integer: IntegerConvs | None = None):
    """The pre-tuning passes; with ``integer`` (an int8 build's QDQ graph) first the integer-conv pass, which
    records its verdicts there, and the fold of the requantization arithmetic around the integer convs."""
    import tvm

    passes = pre_tuning_passes(winograd_tile, layout, target.device)
    if integer is not None:
        passes[:0] = [integer_convs_pass(integer), requantization_pass()]
    with tvm.target.Target(target.tvm_target):
        return tvm.transform.Sequential(passes)(mod)


def _exported_lowering(onnx_path: Path) -> str | None:
    """The lowering psdeploy exported ``onnx_path`` with; None for an ONNX without its record (a layer case)."""
    import onnx

    try:
        return ExportRecord.read(onnx.load(str(onnx_path), load_external_data=False), str(onnx_path)).lowering
    except PsdeployError:
        return None


def default_forms_asked(onnx_path: Path, target: Target, options: BuildOptions, default_lowering: str) -> str:
    """How this build departs from TVM's default forms (the committed databases' forms), as the flags that
    would return to them, e.g. ``--lowering fused``; empty when it does not: tasks a database lacks may be
    those of another form, which a user should hear of before tuning or building untuned."""
    lowering = _exported_lowering(onnx_path)
    flags = []
    if lowering is not None and lowering != default_lowering:
        flags.append(f"--lowering {default_lowering} (this build: {lowering})")
    if options.layout is not None and options.layout != DEFAULT_LAYOUT[target.device]:
        flags.append(f"--layout {DEFAULT_LAYOUT[target.device]} (this build: {options.layout})")
    if options.winograd != "off":
        flags.append(f"--winograd off (this build: {options.winograd})")
    return ", ".join(flags)


def check_untuned(summary: TuningSummary, db: TuningDatabase, onnx_path: Path, target: Target,
                  options: BuildOptions, default_lowering: str) -> None:
    """A build with no budget and tasks the database lacks is refused unless --untuned asks for it (then a
    note); either way, when the database holds records, the default forms the build left are named."""
    missing = missing_tasks(summary)
    if not missing:
        return
    records = db.directory / RECORDS
    departs = default_forms_asked(onnx_path, target, options, default_lowering) \
        if records.is_file() and records.stat().st_size > 0 else ""
    other = (f"it holds records, and the committed databases are tuned in TVM's default forms, which this build "
             f"leaves: {departs}") if departs else ""
    if options.untuned:
        if other:
            summary.notes.append(f"{missing} tasks have no record in {db.directory}: {other}")
        return
    raise PsdeployError(f"--target {target.name}: {missing} of {summary.tasks} tasks have no record in the tuning "
                        f"database {db.directory}{'; ' + other if other else ''}; give a --tune-time budget to tune "
                        f"them, or --untuned to build them untuned (many times slower)")


def build(onnx_path: Path, input_shape: tuple[int, ...], target: Target, options: BuildOptions, out_file: Path,
          winograd_tile: int, layout: ConvLayout, default_lowering: str,
          integer: IntegerConvs | None = None) -> tuple[TuningSummary, dict[str, KernelWork]]:
    """Import, lower, tune, apply, compile and export the library to ``out_file``; what each kernel computes.
    With no budget and tasks the database lacks, refused before compiling unless ``options.untuned``.
    ``integer``: ``onnx_path`` is an int8 build's QDQ graph (``quantized.py``)."""
    import tvm

    from psdeploy.backends.tvm.kernels import kernel_work

    mod = lower(import_onnx(onnx_path, input_shape, layout), target, winograd_tile, layout, integer)
    db = TuningDatabase(options.tuning_db, target)
    database, summary = tune(mod, target, db, options.tune_trials, options.tune_time_s, options.rpc, options.on_batch)
    check_untuned(summary, db, onnx_path, target, options, default_lowering)
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
