"""TVM conv layouts: channels blocked by the vector width by default on CPUs (as measured), NCHW and NHWC on
request, exact for every lowering, the weights' transforms folded at build time, PSConv as one blocked kernel."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from psdeploy import api
from psdeploy.backends import BuildOptions, parse_target
from psdeploy.backends.tvm.intrinsics import register_tensor_intrinsics
from psdeploy.backends.tvm.layout import resolve_layout
from psdeploy.cli import main
from psdeploy.errors import PsdeployError
from psdeploy.export import export_onnx
from psdeploy.load import load_model
from psdeploy.report.config import ReportConfig, platform

pytest.importorskip("tvm")

ODD_SHAPE = (1, 3, 29, 35)  # odd and unequal sides: stride-2 blocks round down, H and W cannot be confused


@pytest.fixture(scope="module")
def digits():
    return load_model("seeded:ps_resnet_digits@4", None)


def _lowered(digits, tmp_path: Path, lowering: str, layout: str, winograd_tile: int = 0, mcpu: str | None = None):
    from psdeploy.backends.tvm.build import import_onnx, lower

    path = tmp_path / f"{lowering}-{layout}-{winograd_tile}.onnx"  # one test may lower one export several ways
    export_onnx(digits, path, lowering)
    spec = parse_target("llvm", mcpu=mcpu)
    conv_layout = resolve_layout(layout, spec, winograd_tile)
    return lower(import_onnx(path, ODD_SHAPE, conv_layout), spec, winograd_tile, conv_layout)


def _calls(mod):
    """(callee name, args) of every call_tir in main."""
    from tvm import relax

    calls = []

    @relax.expr_functor.visitor
    class Calls(relax.PyExprVisitor):
        def visit_call_(self, call) -> None:
            if getattr(call.op, "name", "") == "relax.call_tir":
                calls.append((call.args[0].name_hint, list(call.args[1].fields)))
            super().visit_call_(call)

    Calls().visit_expr(mod["main"])
    return calls


def test_defaults_per_target_and_winograd() -> None:
    cpu, cuda = parse_target("llvm", mcpu="skylake-avx512"), parse_target("cuda")

    def resolved(layout, spec, tile=0) -> str:
        return str(resolve_layout(layout, spec, tile))

    assert resolved(None, cpu) == "nchw16c" and resolved(None, cuda) == "nchw"
    assert resolved("nhwc", cpu) == "nhwc" and resolved("nhwc", cuda) == "nhwc"
    assert resolved(None, cpu, 4) == "nchw16c" and resolved("nchw", cpu, 2) == "nchw"
    assert resolved(None, cuda, 2) == "nchw"
    with pytest.raises(PsdeployError, match="--layout nhwc: Winograd convs are built in NCHW or NCHW"):
        resolve_layout("nhwc", cpu, 2)
    with pytest.raises(PsdeployError, match="--layout nchwc: blocks channels by a CPU's vector width"):
        resolve_layout("nchwc", cuda, 0)


@pytest.mark.parametrize("mcpu, block", [("skylake-avx512", 16), ("znver4", 16), ("haswell", 8), ("znver2", 8),
                                         ("nehalem", 4)])
def test_channel_blocks_follow_the_cpus_vector_width(mcpu, block) -> None:
    assert str(resolve_layout("nchwc", parse_target("llvm", mcpu=mcpu), 0)) == f"nchw{block}c"


@pytest.mark.parametrize("lowering", ["grouped", "sliced", "aligned"])
def test_nhwc_moves_every_conv_and_folds_the_weight_transposes(digits, tmp_path, lowering) -> None:
    from tvm.ir.expr import Constant

    nchw, nhwc = (_lowered(digits, tmp_path, lowering, layout) for layout in ("nchw", "nhwc"))

    def kernel_shapes(mod) -> list[tuple[int, ...]]:  # the (folded, constant) weight of every conv
        return [tuple(args[1].value.shape) for n, args in _calls(mod) if "conv2d" in n]

    before, after = kernel_shapes(nchw), kernel_shapes(nhwc)
    assert len(before) == len(after) > 0 and before != after
    assert all(o == o2 and (h, w, i) == (h2, w2, i2) for (o, i, h, w), (o2, h2, w2, i2) in zip(before, after))
    transposes = [(n, args) for n, args in _calls(nhwc) if "transpose" in n]
    assert transposes, "the input and output change layout"
    assert not any(isinstance(a, Constant) for _, args in transposes for a in args), \
        "a weight transpose was left to run at inference"
    assert not any("transpose" in n for n, _ in _calls(nchw))


@pytest.mark.parametrize("lowering", ["grouped", "sliced", "aligned", "fused"])
def test_every_lowering_is_exact_in_nhwc(digits, tmp_path, lowering) -> None:
    result = api.compile("seeded:ps_resnet_digits@4", target="llvm", output=tmp_path / "a", lowering=lowering,
                         layout="nhwc", input_shape=",".join(map(str, ODD_SHAPE)), tuning_db=tmp_path / "db",
                         untuned=True)
    assert result.manifest.layout == "nhwc" and result.ran and result.parity.passed


def test_nchwc_by_default_with_or_without_winograd_recorded(tmp_path) -> None:
    plain = api.compile("seeded:ps_resnet_digits@4", target="llvm", mcpu="haswell", output=tmp_path / "n",
                        input_shape=",".join(map(str, ODD_SHAPE)), tuning_db=tmp_path / "db", untuned=True)
    assert plain.manifest.layout == "nchw8c" and plain.parity.passed
    wino = api.compile("seeded:ps_resnet_digits@4", target="llvm", mcpu="haswell", output=tmp_path / "w",
                       winograd="f2", lowering="grouped", input_shape=",".join(map(str, ODD_SHAPE)),
                       tuning_db=tmp_path / "db", untuned=True)
    assert wino.manifest.layout == "nchw8c" and wino.parity.passed


def test_bad_layouts_are_one_line_and_write_nothing(tmp_path) -> None:
    runner = CliRunner()
    cases = [(["--target", "llvm", "--winograd", "f4", "--layout", "nhwc"], "--layout nhwc: Winograd"),
             (["--target", "onnxruntime-cpu", "--layout", "nhwc"], "--layout nhwc: not an option of onnxruntime-cpu"),
             (["--target", "llvm", "--layout", "nhcw"], "'nhcw' is not one of")]
    for flags, message in cases:
        out = tmp_path / "out"
        result = runner.invoke(main, ["compile", "seeded:ps_resnet_digits@4", *flags, "-o", str(out)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not out.exists()
    with pytest.raises(PsdeployError, match="--layout 'NHWC': expected one of nchw, nhwc"):
        BuildOptions(layout="NHWC")


def test_recipe_and_report_names_carry_the_layout(tmp_path, monkeypatch) -> None:
    config = ReportConfig(name="t", threads=2, backends=[])
    assert platform("tvm-llvm-nhwc", config).options.layout == "nhwc"
    assert platform("tvm-llvm-nchw", config).options.layout == "nchw"
    assert platform("tvm-llvm", config).options.layout is None
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {checkpoint: 'seeded:ps_resnet_digits@4'}\n"
                      "backend: {target: llvm, layout: nchw}\noutput: " + str(tmp_path / "out") + "\n")
    seen = []
    monkeypatch.setattr(api, "compile_model", lambda request: seen.append(request.options))
    api.compile(recipe=recipe, tuning_db=tmp_path / "db")
    api.compile(recipe=recipe, layout="nhwc", tuning_db=tmp_path / "db")
    assert [o.layout for o in seen] == ["nchw", "nhwc"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("layout: nchw", "layout: NCHW"))
    with pytest.raises(PsdeployError, match="layout"):
        api.compile(recipe=bad)


def _graph_ops(mod):
    """Count of every Relax op in main, and the shapes the non-constant layout transforms convert."""
    from collections import Counter

    from tvm import relax
    from tvm.ir.expr import Constant

    ops, transforms = Counter(), []

    @relax.expr_functor.visitor
    class Ops(relax.PyExprVisitor):
        def visit_call_(self, call) -> None:
            name = getattr(call.op, "name", "")
            ops[name] += 1
            if name == "relax.nn.conv2d":
                ops[f"conv2d {call.attrs.data_layout}"] += 1
            if name == "relax.layout_transform" and not isinstance(call.args[0], Constant):
                transforms.append(tuple(int(v) for v in call.args[0].ty.shape))
            super().visit_call_(call)

    Ops().visit_expr(mod["main"])
    return ops, transforms


@pytest.fixture(scope="module")
def full_networks(tmp_path_factory):
    """ResNet-50 and PS-ResNet-50 (the fused lowering), exported once."""
    out = tmp_path_factory.mktemp("nets")
    paths = {}
    for name, lowering in (("resnet50", "grouped"), ("ps_resnet50", "fused")):
        paths[name] = out / f"{name}.onnx"
        export_onnx(load_model(f"seeded:{name}", None), paths[name], lowering, input_shape=(1, 3, 64, 64))
    return paths


@pytest.mark.parametrize("network", ["resnet50", "ps_resnet50"])
def test_nchwc_changes_layout_only_at_the_networks_input_and_output(full_networks, network) -> None:
    """Every conv blocked (the stem reading its 3 channels as one block, PSConv layers as one kernel each):
    one transform into blocks at the input, one out at the classifier's flatten, no Gather, Slice or Concat."""
    import tvm

    from psdeploy.backends.tvm.build import import_onnx
    from psdeploy.backends.tvm.layout import ConvLayout, layout_passes

    spec = parse_target("llvm", mcpu="skylake-avx512")
    layout = ConvLayout("nchwc", 16)
    with tvm.target.Target(spec.tvm_target):
        mod = tvm.transform.Sequential(layout_passes(layout))(import_onnx(full_networks[network], (1, 3, 64, 64),
                                                                          layout))
    ops, transforms = _graph_ops(mod)
    assert transforms == [(1, 3, 64, 64), (1, 2048 // 16, 1, 1, 16)], transforms
    assert ops["relax.nn.conv2d"] == 53 and ops["conv2d NCHW16c"] == 52 and ops["conv2d NCHW3c"] == 1
    assert not {"relax.take", "relax.strided_slice", "relax.concat", "relax.call_tir"} & set(ops)


def _kernel_calls(mod) -> list[tuple[str, int]]:
    """(name, rank of the data it reads) of every conv and PSConv kernel call in main."""
    return [(name, len(args[0].ty.shape)) for name, args in _calls(mod) if "conv" in name]


def test_winograd_keeps_the_blocked_layout(digits, tmp_path) -> None:
    """Winograd in ``nchwc``: each stride-1 3x3 conv (the plain ones and ``grouped``'s dilated groups) reads
    the layout its direct conv reads (blocks, or NCHW where its groups do not fill blocks), and the build
    changes layout exactly where the direct blocked build does. Blocks of 8 (AVX2), whatever this CPU has, so
    that the digits model has both kinds."""
    direct, wino = (_lowered(digits, tmp_path, "grouped", "nchwc", tile, mcpu="haswell") for tile in (0, 2))
    pairs = list(zip(_kernel_calls(direct), _kernel_calls(wino), strict=True))
    replaced = [(name, rank, direct_rank) for (_, direct_rank), (name, rank) in pairs if "winograd_f2" in name]
    assert all(rank == direct_rank for _, rank, direct_rank in replaced), replaced
    assert {(name, rank) for name, rank, _ in replaced} >= {("conv2d_winograd_f2", 5), ("conv2d_winograd_f2_d2", 4)}

    def transforms(mod) -> list[str]:
        return sorted(name for name, _ in _calls(mod) if "layout_transform" in name)

    assert transforms(wino) == transforms(direct)


@pytest.mark.parametrize("mcpu, block", [("skylake-avx512", 16), ("haswell", 8)])
def test_every_lowering_is_exact_in_nchwc(digits, tmp_path, mcpu, block) -> None:
    """The digits network's parts are 4, 8 and 16 channels wide: with blocks of 8 its last two stages' PSConv
    layers (stride 2 included) run as blocked kernels, with 16 the last stage's, the rest stays NCHW; exact
    every way, the fused kernels included (built and run at blocks of 8; the TE-level test runs them at 16),
    every blocked conv scheduled by psdeploy's register-tiled rule."""
    import tvm

    from psdeploy.backends.tvm.build import import_onnx, lower
    from psdeploy.backends.tvm.layout import ConvLayout
    from psdeploy.backends.tvm.register_tiling import RULE

    path = tmp_path / "fused.onnx"
    export_onnx(digits, path, "fused")
    layout = ConvLayout("nchwc", block)
    spec = parse_target("llvm", mcpu=mcpu)
    lowered = lower(import_onnx(path, ODD_SHAPE, layout), spec, 0, layout)
    kernels = _kernel_calls(lowered)
    fused = [rank for name, rank in kernels if name.startswith("fused_psconv")]
    assert fused.count(5) == (4 if block == 8 else 2) and fused.count(4) == 6 - fused.count(5), kernels
    # every blocked conv, the stem (3 channels in, as one block) included, asks for the register-tiled rule; NCHW
    # ones don't
    blocked = {name for name, args in _calls(lowered) if "conv" in name and len(args[0].ty.shape) == 5}
    assert {int(args[0].ty.shape[-1]) for name, args in _calls(lowered) if name in blocked} == {3, block}
    requested = {gv.name_hint for gv, func in lowered.functions.items()
                 if isinstance(func, tvm.tirx.PrimFunc) and f'"schedule_rule": "{RULE}"' in func.script()}
    assert blocked and requested == blocked
    for lowering in ("grouped", "fused") if block == 8 else ():
        result = api.compile("seeded:ps_resnet_digits@4", target="llvm", mcpu=mcpu, output=tmp_path / lowering,
                             lowering=lowering, layout="nchwc", input_shape=",".join(map(str, ODD_SHAPE)),
                             tuning_db=tmp_path / "db", untuned=True)
        assert result.manifest.layout == f"nchw{block}c" and result.ran and result.parity.passed


@pytest.mark.parametrize("mcpu, stride, size", [("haswell", 2, (13, 11)), ("skylake-avx512", 1, (9, 12))])
def test_a_ps_resnext_layer_with_off_design_kernels_is_exact_in_nchwc(tmp_path, mcpu, stride, size) -> None:
    """PS-ResNeXt as released keeps non-zero "masked" kernels: the fused lowering adds them as plain grouped
    convs. With 8 cards of 32 channels (parts of 8), blocks of 8 run the PSConv kernel blocked, blocks of 16
    leave it NCHW between two transforms; the off-design convs block either way. Exact both ways."""
    import torch

    from psdeploy.arch.psconv import PSGConv2d
    from psdeploy.backends.tvm.host import cannot_run_here
    from psdeploy.search.prepare import prepare_on_target
    from psdeploy.rewrite.lattice import PSConvLayer
    from psdeploy.rewrite.lowerings import get_lowering

    torch.manual_seed(stride)
    module = PSGConv2d(256, 256, 3, stride, 1, 2, 8, 4).eval()  # released init: its mask leaves cards 1, 3, 5, 7
    layer = PSConvLayer.from_released("l", module)
    assert any(layer.off_design_blocks().values())
    fused = get_lowering("fused").lower(layer, torch.zeros(256)).module
    assert len(fused.remainders) > 0
    target = parse_target("llvm", mcpu=mcpu)
    if reason := cannot_run_here(target):
        pytest.skip(reason)
    prepared = prepare_on_target(fused, module, (1, 256, *size), target,
                                 BuildOptions(layout="nchwc", untuned=True, tuning_db=tmp_path / "db"), 1, "fused",
                                 tmp_path)
    assert prepared.parity.passed


@pytest.mark.parametrize("kernel, stride, size, block, in_channels",
                         [(3, 1, (11, 9), 8, 16), (1, 2, (13, 7), 16, 32), (3, 2, (9, 12), 16, 32), (1, 1, (7, 10), 8, 16),
                          (7, 2, (23, 18), 16, 3)])
def test_blocked_convs_are_register_tiled_exactly(kernel, stride, size, block, in_channels) -> None:
    """TOPI's ``conv2d_NCHWc`` under psdeploy's register-tiled rule (each of its design spaces): exact against
    torch for 3x3 and 1x1 convs and a stem (7x7 stride 2, its 3 channels one input block), stride 2 and odd sizes
    included; its space passes MetaSchedule's postprocs."""
    import numpy as np
    import torch
    import tvm
    from tvm import s_tir, te, topi
    from tvm.s_tir import meta_schedule as ms

    from psdeploy.backends.tvm.fused import block_weight
    from psdeploy.backends.tvm.register_tiling import RULE, register_schedule_rules, register_tiled
    from tests.conftest import TVM_TOL

    in_block, pad = min(block, in_channels), kernel // 2
    data = torch.randn(1, in_channels, *size)
    weight = torch.randn(3 * block, in_channels, kernel, kernel)
    expected = torch.nn.functional.conv2d(data, weight, stride=stride, padding=pad).numpy()
    blocked_data = data.numpy().reshape(1, -1, in_block, *size).transpose(0, 1, 3, 4, 2).copy()
    blocked_weight = block_weight(weight.numpy(), in_block, block)
    target = tvm.target.Target(parse_target("llvm").tvm_target)
    with target:
        x = te.placeholder(blocked_data.shape, name="x")
        w = te.placeholder(blocked_weight.shape, name="w")
        out = topi.nn.conv2d_NCHWc(x, w, [stride] * 2, [pad] * 2, [1, 1], f"NCHW{in_block}c", f"NCHW{block}c",
                                   "float32")
    func = te.create_prim_func([x, w, out])
    register_schedule_rules()
    annotated = s_tir.Schedule(func)
    annotated.annotate(annotated.get_sblock("conv2d_NCHWc"), "schedule_rule", RULE)
    register_tensor_intrinsics(parse_target("llvm"))  # as tuning does: not every vendor's (25 s)
    context = ms.TuneContext(mod=annotated.mod, target=target, space_generator="post-order-apply",
                             search_strategy="evolutionary", task_name="conv")
    spaces = context.space_generator.generate_design_space(context.mod)
    assert len(spaces) == 2  # 3 output blocks: tiles of 1 and of 3 (3 x 4 pixels fit AVX2's registers)
    for space in spaces:
        assert [i.kind.name for i in space.trace.insts].count("SamplePerfectTile") == 1
        assert all(postproc.apply(space) for postproc in context.space_generator.postprocs)
    sch = s_tir.Schedule(func, seed=1)
    for space in register_tiled(sch, sch.get_sblock("conv2d_NCHWc")):
        lib = tvm.compile(space.mod, target=target)
        result = tvm.runtime.tensor(np.zeros([int(v) for v in out.shape], "float32"))
        lib["main"](tvm.runtime.tensor(blocked_data), tvm.runtime.tensor(blocked_weight), result)
        got = result.numpy().transpose(0, 1, 4, 2, 3).reshape(expected.shape)
        assert np.abs(got - expected).max() / np.abs(expected).max() < TVM_TOL
