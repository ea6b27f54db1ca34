"""The fused lowering (one PSConv node) and Winograd legalization: exact everywhere they run."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from psdeploy import api
from psdeploy.backends import BACKENDS, open_runner, parse_target
from psdeploy.backends.tvm.intrinsics import register_tensor_intrinsics
from psdeploy.errors import PsdeployError
from psdeploy.export import export_onnx
from psdeploy.load import load_model
from psdeploy.report.config import ReportConfig, platform
from psdeploy.rewrite.lowerings.fused_op import DOMAIN, OP_TYPE
from tests.conftest import TVM_TOL, WINOGRAD_TOL, assert_runs_like_torch


@pytest.fixture(scope="module")
def digits():
    return load_model("seeded:ps_resnet_digits@4", None)


@pytest.fixture(scope="module")
def fused_onnx(digits, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fused") / "fused.onnx"
    export_onnx(digits, path, "fused")  # raises unless onnxruntime (running the function bodies) matches
    return path


def test_fused_export_is_one_node_per_layer_with_a_definition(fused_onnx, digits, tmp_path) -> None:
    model = onnx.load(str(fused_onnx))
    nodes = [n for n in model.graph.node if (n.domain, n.op_type) == (DOMAIN, OP_TYPE)]
    assert len(nodes) == 6 and not any(n.op_type == "Gather" for n in model.graph.node)
    defined = {(f.domain, f.name, f.overload) for f in model.functions}
    assert all((DOMAIN, OP_TYPE, n.overload) in defined for n in nodes)
    rates = {tuple(onnx.helper.get_attribute_value(a)) for n in nodes for a in n.attribute if a.name == "rates"}
    assert rates == {(2, 1, 4, 1, 1, 2, 1, 4, 4, 1, 2, 1, 1, 4, 1, 2)}  # the released lattice, row-major


def test_fused_graph_has_the_plain_conv_macs(fused_onnx, digits, tmp_path) -> None:
    fused = export_onnx(digits, tmp_path / "again.onnx", "fused").graph
    grouped = export_onnx(digits, tmp_path / "grouped.onnx", "grouped").graph
    assert fused.conv_macs == grouped.conv_macs and fused.gathers == 0


def test_fused_refuses_the_old_exporter(digits, tmp_path) -> None:
    with pytest.raises(PsdeployError, match="opset 17"):
        export_onnx(digits, tmp_path / "old.onnx", "fused", opset=17)
    assert not (tmp_path / "old.onnx").exists()


def test_fused_runs_natively_only_where_tvm_compiles_it() -> None:
    assert "fused" not in BACKENDS["onnxruntime"].native_lowerings()
    assert "fused" not in BACKENDS["openvino"].native_lowerings()
    assert set(BACKENDS["tvm"].native_lowerings()) == {"reference", "grouped", "sliced", "aligned", "polyphase", "fused"}


tvm = pytest.importorskip("tvm")


def test_report_backend_names_resolve_to_targets() -> None:
    config = ReportConfig(name="t", threads=2, backends=[])
    llvm, cuda = platform("tvm-llvm", config), platform("tvm-cuda-wino2", config)
    assert llvm.target.tvm_target["kind"] == "llvm" and llvm.target.tvm_target["num-cores"] == 2
    assert llvm.options.winograd == "off" and cuda.options.winograd == "f2"
    assert cuda.target.tvm_target["kind"] == "cuda" and platform("torch", config).target is None


def test_fused_compiles_to_one_tvm_function_per_layer_shape_and_verifies(fused_onnx, digits, tmp_path) -> None:
    from psdeploy.backends.tvm.build import import_onnx, lower

    spec = parse_target("llvm")
    mod = lower(import_onnx(fused_onnx, (1, 3, 32, 32)), spec)
    assert any("psconv_fused" in gv.name_hint for gv in mod.get_global_vars())
    result = api.compile(str(fused_onnx), target="llvm", output=tmp_path / "art", tuning_db=tmp_path / "db",
                         untuned=True)
    assert result.ran and result.parity.passed and result.manifest.lowering == "fused"
    assert_runs_like_torch(open_runner(tmp_path / "art").run, digits.model, (1, 3, 32, 32), TVM_TOL)


@pytest.fixture(scope="module")
def polyphase_lowered(digits, tmp_path_factory):
    """The polyphase export and its direct-conv lowering, made once for both tiles."""
    from psdeploy.backends.tvm.build import import_onnx, lower

    path = tmp_path_factory.mktemp("poly") / "poly.onnx"
    export_onnx(digits, path, "polyphase")
    return path, lower(import_onnx(path, (1, 3, 32, 32)), parse_target("llvm"))


@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_replaces_every_eligible_conv(polyphase_lowered, tile) -> None:
    from psdeploy.backends.tvm.build import import_onnx, lower

    path, plain = polyphase_lowered
    mod = lower(import_onnx(path, (1, 3, 32, 32)), parse_target("llvm"), tile)
    names = [gv.name_hint for gv in mod.get_global_vars()]
    assert any(f"winograd_f{tile}" in n for n in names)
    direct = [n for n in names if n.startswith("fused_conv2d") or n == "conv2d"]
    assert len(direct) < len([gv for gv in plain.get_global_vars() if "conv2d" in gv.name_hint])


def test_winograd_artifact_verifies_and_is_recorded(digits, tmp_path) -> None:
    result = api.compile("seeded:ps_resnet_digits@4", target="llvm", output=tmp_path / "w", lowering="polyphase",
                         winograd="f4", tuning_db=tmp_path / "db", untuned=True)
    assert result.ran and result.parity.passed and result.manifest.winograd == "f4"
    assert_runs_like_torch(open_runner(tmp_path / "w").run, digits.model, (1, 3, 32, 32), WINOGRAD_TOL)
    assert result.manifest.accuracy["prediction_agreement"] == 1.0


@pytest.mark.parametrize("channels, height, width, dilation, groups, tile",
                         [(8, 9, 11, 2, 4, 2), (8, 13, 7, 4, 2, 4), (4, 6, 6, 2, 1, 4), (16, 14, 14, 4, 4, 2)])
def test_dilated_winograd_reads_its_tiles_in_place(channels, height, width, dilation, groups, tile) -> None:
    """A dilated PSConv branch as Winograd with no space-to-batch copy: exact on odd sizes, grouped,
    both tiles, dilation 2 and 4, sizes that are no multiple of the tile or the dilation."""
    import numpy as np
    import torch
    import tvm
    from tvm import relax

    from psdeploy.backends.tvm.winograd import winograd_legalize

    rng = np.random.default_rng(channels + height + dilation)
    x = rng.standard_normal((2, channels, height, width)).astype("float32")
    w = rng.standard_normal((channels, channels // groups, 3, 3)).astype("float32")
    bb = relax.BlockBuilder()
    data = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with bb.function("main", [data]):
        bb.emit_func_output(bb.emit(relax.op.nn.conv2d(data, relax.const(w), strides=1, padding=dilation,
                                                       dilation=dilation, groups=groups)))
    mod = relax.transform.LegalizeOps(customize_legalize_map={"relax.nn.conv2d": winograd_legalize(tile)})(bb.get())
    names = [gv.name_hint for gv in mod.get_global_vars()]
    assert f"conv2d_winograd_f{tile}_d{dilation}" in names and "space_to_batch" not in " ".join(names)
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    expected = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), None, 1,
                                          dilation, dilation, groups).numpy()
    assert np.abs(got - expected).max() / np.abs(expected).max() < WINOGRAD_TOL


def test_grouped_winograd_artifact_has_no_direct_dilated_conv(digits, tmp_path) -> None:
    """``grouped`` + Winograd: the dilated branches run the in-place dilated Winograd, verified end to end."""
    result = api.compile("seeded:ps_resnet_digits@4", target="llvm", output=tmp_path / "g", lowering="grouped",
                         winograd="f2", tuning_db=tmp_path / "db", untuned=True)
    assert result.ran and result.parity.passed and result.manifest.winograd == "f2"
    assert_runs_like_torch(open_runner(tmp_path / "g").run, digits.model, (1, 3, 32, 32), WINOGRAD_TOL)


def test_winograd_is_refused_for_openvino(tmp_path) -> None:
    pytest.importorskip("openvino")
    with pytest.raises(PsdeployError, match="--winograd f2"):
        api.compile("seeded:ps_resnet_digits", target="openvino-cpu", output=tmp_path / "ov", winograd="f2")
    assert not (tmp_path / "ov").exists()


def test_fused_kernel_gets_multi_level_tiling() -> None:
    """MetaSchedule tiles the fused block like a conv (a select or table in its index made it refuse)."""
    import numpy as np
    from tvm import te
    from tvm.s_tir import meta_schedule as ms

    from psdeploy.backends.tvm.fused import psconv_compute, slot_rates, slot_weights
    from psdeploy.rewrite.lattice import released_design

    rates = slot_rates(4, [d for row in released_design(4, 2) for d in row])
    assert rates == [2, 1, 4, 1]
    x = te.placeholder((1, 32, 14, 14), name="x")
    weights = [te.placeholder(w.shape, name=f"w{j}")
               for j, w in enumerate(slot_weights(np.zeros((32, 32, 3, 3), "float32"), 1, 4))]
    func = te.create_prim_func([x, *weights, psconv_compute(x, *weights, stride=1, groups=1, rates=rates)])
    register_tensor_intrinsics(parse_target("llvm"))  # as tuning does: not every vendor's (25 s)
    context = ms.TuneContext(mod=tvm.IRModule({"main": func}), target=tvm.target.Target(parse_target("llvm").tvm_target),
                             space_generator="post-order-apply", search_strategy="evolutionary", task_name="fused")
    spaces = context.space_generator.generate_design_space(context.mod)
    assert all(sum(i.kind.name == "SamplePerfectTile" for i in s.trace.insts) >= 6 for s in spaces)


def test_non_cyclic_lattice_is_refused_by_the_fused_kernel() -> None:
    from psdeploy.backends.tvm.fused import slot_rates

    with pytest.raises(PsdeployError, match="not cyclic"):
        slot_rates(2, [1, 2, 1, 2])


def test_fused_and_winograd_build_for_cuda(tmp_path) -> None:
    """Both compile for sm_90 here (nvcc); they run only on a GPU machine, which says so."""
    from psdeploy.backends.tvm.host import cuda_available

    result = api.compile("seeded:ps_resnet_digits", target="cuda", output=tmp_path / "cu", lowering="fused",
                         winograd="f4", tuning_db=tmp_path / "db", untuned=True)
    assert (tmp_path / "cu" / "module.so").stat().st_size > 0 and result.manifest.winograd == "f4"
    assert result.ran == cuda_available()


def _blocked_psconv(channels: int, size: int, stride: int, block: int, rates: list[int]):
    """``(x, func)``: the blocked PSConv kernel of a ``channels``-channel layer (groups 1, 4 parts) on
    ``NCHW{block}c`` data of ``size`` x ``size``, as a TE PrimFunc over placeholders."""
    import numpy as np
    from tvm import te

    from psdeploy.backends.tvm.fused import psconv_compute, stacked_slot_weights

    x = te.placeholder((1, channels // block, size, size, block), name="x")
    weight = stacked_slot_weights(np.zeros((channels, channels, 3, 3), "float32"), 1, 4, block)
    w = te.placeholder(weight.shape, name="w")
    return x, te.create_prim_func([x, w, psconv_compute(x, w, stride=stride, groups=1, rates=rates)])


def test_blocked_kernel_reads_the_slots_weights_as_one_tensor() -> None:
    """The blocked kernel (fp32 and int8) reads one weight, each output block's slots side by side after its input
    block, so its weights stream in order as a plain conv's do; int8's is the same tensor in VNNI form."""
    import numpy as np

    from psdeploy.backends.tvm.fused import block_weight, slot_weights, stacked_slot_weights
    from psdeploy.backends.tvm.int8_conv import psconv_weights, vnni_weight

    weight = np.random.default_rng(0).standard_normal((64, 64, 3, 3)).astype("float32")
    stacked, int8 = stacked_slot_weights(weight, 1, 4, 16), psconv_weights(weight, 1, 4, 16)
    assert stacked.shape == (4, 1, 4, 3, 3, 16, 16) and stacked.flags.c_contiguous
    for j, slot in enumerate(slot_weights(weight, 1, 4)):
        assert np.array_equal(stacked[:, :, j], block_weight(slot, 16, 16))
        assert np.array_equal(int8[:, :, j], vnni_weight(block_weight(slot, 16, 16)))
    _, func = _blocked_psconv(64, 7, 1, 16, [2, 1, 4, 1])
    assert [tuple(int(d) for d in p.shape) for p in func.params[1:-1]] == [stacked.shape]


def test_blocked_fused_kernel_is_register_tiled_and_passes_the_postprocs() -> None:
    """In NCHW{b}c the kernel's space is psdeploy's register-tiled rule: one design space per output-block tile
    that fits AVX2's 16 registers beside its pixel tile (1, 2 and 4 of 8 blocks), each with the pixel tile
    sampled (so MetaSchedule tunes it), the slot loop unrolled and the one padded input copied in parallel;
    and MetaSchedule's own postprocs (parallel/vectorize/unroll, reduction init) accept each."""
    from tvm.s_tir import meta_schedule as ms

    from psdeploy.backends.tvm.register_tiling import register_schedule_rules

    register_schedule_rules()
    _, func = _blocked_psconv(64, 14, 2, 8, [2, 1, 4, 1])
    register_tensor_intrinsics(parse_target("llvm"))  # as tuning does: not every vendor's (25 s)
    context = ms.TuneContext(mod=tvm.IRModule({"main": func}), target=tvm.target.Target(parse_target("llvm").tvm_target),
                             space_generator="post-order-apply", search_strategy="evolutionary", task_name="fused")
    spaces = context.space_generator.generate_design_space(context.mod)
    assert len(spaces) == 3
    for space in spaces:
        kinds = [i.kind.name for i in space.trace.insts]
        assert kinds.count("SamplePerfectTile") == 1 and kinds.count("CacheWrite") == 1
        assert kinds.count("Parallel") == 1 + 1 and kinds.count("Unroll") == 3  # slot, output blocks, pixels
    assert all(postproc.apply(space) for postproc in context.space_generator.postprocs)


def _register_tiled_spaces(func, block_name: str) -> list[tuple[int, int, int]]:
    """Per design space of the rule: (output blocks per tile, the pixel tile's largest size, the pixels it tiles)."""
    import numpy as np
    from tvm import s_tir

    from psdeploy.backends.tvm.register_tiling import register_tiled

    sch = s_tir.Schedule(func, seed=1)
    spaces = []
    for space in register_tiled(sch, sch.get_sblock(block_name)):
        insts = space.trace.insts
        sampled = next(i for i in insts if i.kind.name == "SamplePerfectTile")
        oc_tile = [int(i.inputs[2]) for i in insts if i.kind.name == "Split" and i.inputs[1] is None][-1]  # after ic's
        pixels = next(i for i in insts if i.kind.name == "Split" and i.inputs[1] is not None).outputs
        spaces.append((oc_tile, int(sampled.attrs[1]), int(np.prod([int(space.get(v).extent) for v in pixels]))))
    return spaces


@pytest.mark.parametrize("channels, size, stride, block", [(64, 56, 1, 16), (128, 28, 1, 16), (128, 56, 2, 16),
                                                           (512, 7, 1, 16), (256, 14, 1, 8), (512, 14, 2, 8)])
def test_fused_kernel_gets_the_plain_convs_tiles(channels, size, stride, block) -> None:
    """The register-tiled rule offers a PSConv kernel exactly the tiles it offers the plain 3x3 conv it replaces
    (output blocks per tile, pixel tile bound, the pixels tiled), so tuning can reach the plain conv's speed."""
    from tvm import s_tir, te, topi

    from psdeploy.backends.tvm.register_tiling import RULE

    x, fused = _blocked_psconv(channels, size, stride, block, [1, 2, 1, 4])
    w = te.placeholder((channels // block, channels // block, 3, 3, block, block), name="w")
    with tvm.target.Target(parse_target("llvm").tvm_target):
        conv = topi.nn.conv2d_NCHWc(x, w, [stride] * 2, [1, 1], [1, 1], f"NCHW{block}c", f"NCHW{block}c", "float32")
    plain = s_tir.Schedule(te.create_prim_func([x, w, conv]))
    plain.annotate(plain.get_sblock("conv2d_NCHWc"), "schedule_rule", RULE)
    offered = _register_tiled_spaces(fused, "psconv_fused")
    assert offered == _register_tiled_spaces(plain.mod["main"], "conv2d_NCHWc")
    assert [oc_tile for oc_tile, _, _ in offered] == [t for t in (1, 2, 3, 4) if (channels // block) % t == 0]


@pytest.mark.parametrize("size, stride", [(7, 1), (14, 2), (56, 1)])
def test_fused_kernel_copies_its_input_once_with_one_zero_row(size, stride) -> None:
    """The blocked kernel's one copy of its input pads the columns by the largest rate but adds a single zero row,
    which every tap outside the image reads: padding the rows by the rate too made the copy 2.8x a 7x7 input."""
    _, func = _blocked_psconv(64, size, stride, 16, [2, 1, 4, 1])
    copies = [tuple(int(v) for v in b.shape) for b in func.body.block.alloc_buffers]
    assert copies == [(1, 4, size + 1, size + 2 * 4, 16)]


@pytest.mark.parametrize("groups, stride, size, channels, block", [
    (1, 1, (11, 9), 64, 0), (1, 2, (13, 7), 64, 0), (4, 2, (9, 12), 64, 0), (4, 1, (10, 10), 64, 0),
    (8, 2, (7, 11), 64, 0), (1, 1, (11, 9), 128, 16), (1, 2, (13, 7), 128, 8), (2, 2, (9, 12), 128, 16),
    (4, 1, (10, 10), 128, 8)])
def test_fused_kernel_exact_at_the_te_level(groups, stride, size, channels, block) -> None:
    """The TE computation alone (no tuning) against the operator's definition (one masked conv per rate),
    for the packed weight of a released layer: groups 1/2/4/8, stride 2, odd sizes, in NCHW and (``block``)
    on NCHW{block}c data with blocked slot weights; blocked, both unscheduled and register-tiled (every
    design space of the rule, its pixel tile sampled with two seeds)."""
    import numpy as np
    import torch
    from tvm import s_tir, te

    from psdeploy.backends.tvm.register_tiling import register_tiled

    from psdeploy.arch.psconv import PSGConv2d, released_init_mask
    from psdeploy.backends.tvm.fused import psconv_compute, slot_rates, slot_weights, stacked_slot_weights
    from psdeploy.rewrite.lattice import PSConvLayer
    from psdeploy.rewrite.lowerings import get_lowering
    from tests.conftest import TVM_TOL

    torch.manual_seed(groups + stride + block)
    module = PSGConv2d(channels, channels, 3, stride, 1, 2, groups, 4).eval()
    with torch.no_grad():
        module.conv.weight[released_init_mask(module)] = 0.0
    fused = get_lowering("fused").lower(PSConvLayer.from_released("l", module), torch.zeros(channels)).module
    rates = slot_rates(4, list(fused.rates))
    packed = fused.weight.detach().numpy()
    weights = [stacked_slot_weights(packed, groups, 4, block)] if block else slot_weights(packed, groups, 4)

    def laid_out(t: np.ndarray) -> np.ndarray:  # NCHW -> NCHW{block}c
        if not block:
            return t
        n, c, h, w_ = t.shape
        return np.ascontiguousarray(t.reshape(n, c // block, block, h, w_).transpose(0, 1, 3, 4, 2))

    data = torch.randn(1, channels, *size)
    x = te.placeholder(laid_out(data.numpy()).shape, name="x")
    w = [te.placeholder(s.shape, name=f"w{j}") for j, s in enumerate(weights)]
    func = te.create_prim_func([x, *w, psconv_compute(x, *w, stride=stride, groups=groups, rates=rates)])
    with torch.no_grad():
        expected = laid_out(torch.ops.psdeploy.psconv(data, fused.weight, fused.bias, stride, groups, 4,
                                                      list(fused.rates)).numpy())
    schedules = [func]
    for seed in range(1, 3) if block else ():
        sch = s_tir.Schedule(func, seed=seed)
        schedules += [space.mod["main"] for space in register_tiled(sch, sch.get_sblock("psconv_fused"))]
    for scheduled in schedules:
        lib = tvm.compile(tvm.IRModule({"main": scheduled}), target=tvm.target.Target(parse_target("llvm").tvm_target))
        out = tvm.runtime.tensor(np.zeros(expected.shape, "float32"))
        lib["main"](tvm.runtime.tensor(laid_out(data.numpy())), *(tvm.runtime.tensor(s) for s in weights), out)
        assert np.abs(out.numpy() - expected).max() / np.abs(expected).max() < TVM_TOL
