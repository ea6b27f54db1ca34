"""int8 in TVM: the QDQ graph's convs made integer kernels, each exact against an integer reference, the demo's
int8 build held to the gate; int8 where it cannot build is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from psdeploy import api
from psdeploy.backends import Manifest, open_runner, parse_target
from psdeploy.backends.tvm.host import host_cpu_flags
from psdeploy.backends.tvm.integer_reference import conv_int, psconv_int
from psdeploy.demo_data import digits_split
from psdeploy.errors import PsdeployError
from psdeploy.load import load_model
from psdeploy.parity.runners import torch_runner
from psdeploy.rewrite.lowerings.fused_op import psconv
from tests.conftest import DEMO_CHECKPOINT

pytest.importorskip("tvm")
needs_vnni = pytest.mark.skipif("avx512vnni" not in (host_cpu_flags() or frozenset()),
                                reason="TVM's int8 kernels run on CPUs with AVX512-VNNI")


@pytest.fixture(scope="module")
def tvm_int8(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tvm-int8") / "digits-tvm-int8"
    api.compile(str(DEMO_CHECKPOINT), target="llvm", output=out, precision="int8", calibration="digits",
                untuned=True, tuning_db=out.parent / "db")
    return out


@needs_vnni
def test_the_demo_builds_int8_in_tvm_and_passes_the_gate(tvm_int8) -> None:
    manifest = Manifest.read(tvm_int8)
    quantization = manifest.quantization
    assert manifest.precision == "int8" and manifest.lowering == "fused" and manifest.parity is None
    assert quantization.convs == quantization.convs_int8 == 22 and not quantization.float_convs
    assert quantization.tool.startswith("onnxruntime") and "integer convs" in quantization.tool
    # every 3x3 PSConv layer an integer PSConv kernel; every other conv, the stem's 3-channel block read as 4
    # included, an integer conv (layers of one shape share a kernel: scales are its arguments, not literals)
    assert {k.op for k in manifest.kernels.values()} == {"psconv_int8", "conv2d_NCHWc_int8"}
    gate = manifest.gate
    assert gate.samples == 450 and gate.mean_cosine >= gate.gate.min_cosine and gate.top1_agreement >= 0.99
    assert manifest.accuracy["checkpoint_top1"] - manifest.accuracy["artifact_top1"] <= 0.005
    # the test's own look, on 60 held-out digits (the compile's look took all 450)
    _, _, x, y = digits_split()
    run, reference = open_runner(tvm_int8).run, torch_runner(load_model(DEMO_CHECKPOINT).model)
    int8 = np.array([run(x[i:i + 1])[0].argmax() for i in range(60)])
    fp32 = np.array([reference(x[i:i + 1])[0].argmax() for i in range(60)])
    assert np.mean(int8 == fp32) >= 0.98 and np.mean(int8 == y[:60]) >= 0.95


def _blocked(x: np.ndarray, block: int = 16) -> np.ndarray:
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // block, block, h, w).transpose(0, 1, 3, 4, 2))


def _unblocked(y: np.ndarray) -> np.ndarray:
    n, c, h, w, b = y.shape
    return y.transpose(0, 1, 4, 2, 3).reshape(n, c * b, h, w)


def _run(func, args: list[np.ndarray], out_shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """The PrimFunc built for this CPU and run once; its output and its assembly."""
    import tvm

    library = tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target(parse_target("llvm").tvm_target))
    device = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros(out_shape, "int32"), device)
    library["main"](*[tvm.runtime.tensor(a, device) for a in args], out)
    return out.numpy(), library.mod.inspect_source("asm")


def _every_schedule(func, block: str):
    """The compute as written, then each design space of the int8 rule (each tile of output blocks)."""
    from tvm import s_tir

    from psdeploy.backends.tvm.int8_tiling import int8_tiled
    from psdeploy.backends.tvm.vnni import register_vnni_intrinsic

    register_vnni_intrinsic()
    yield func, False
    sch = s_tir.Schedule(func)
    for space in int8_tiled(sch, sch.get_sblock(block)):
        yield space.mod["main"], True


@needs_vnni
@pytest.mark.parametrize(("channels", "size", "kernel", "stride"), [
    (32, 13, 3, 2), (48, 9, 3, 1), (32, 7, 1, 2),
    (3, 15, 7, 2),  # the stem: one block of 3 channels, read as 4
])
def test_the_blocked_integer_conv_is_exact_scheduled_and_tensorized(channels, size, kernel, stride) -> None:
    from tvm import te

    from psdeploy.backends.tvm.fused import block_weight
    from psdeploy.backends.tvm.int8_conv import conv2d_nchwc_int8, in_fours, vnni_weight

    rng = np.random.default_rng(channels + size)
    x = rng.integers(0, 256, (1, channels, size, size), dtype=np.uint8)
    w = rng.integers(-128, 128, (64, channels, kernel, kernel), dtype=np.int8)
    pad = kernel // 2
    expected = conv_int(x, w, stride, (pad,) * 4)
    block = min(channels, 16)
    data = te.placeholder((1, channels // block, size, size, block), "uint8")
    weight = te.placeholder((4, channels // block, kernel, kernel, -(-block // 4), 16, 4), "int8")
    out = conv2d_nchwc_int8(data, weight, (stride, stride), (pad,) * 4, (1, 1))
    args = [_blocked(x, block), vnni_weight(in_fours(block_weight(w, block, 16)))]
    for func, scheduled in _every_schedule(te.create_prim_func([data, weight, out]), "conv2d_NCHWc_int8"):
        y, asm = _run(func, args, tuple(int(v) for v in out.shape))
        assert np.array_equal(_unblocked(y), expected)
        assert "vpdpbusd" in asm or not scheduled  # (LLVM may find it in the unscheduled loops too)


@needs_vnni
@pytest.mark.parametrize(("channels", "size", "stride", "groups", "parts", "rates"), [
    (128, 9, 1, 1, 4, [1, 2, 4, 2]),  # PS-ResNet's lattice: 32-channel parts, two blocks each
    (128, 11, 2, 1, 4, [1, 2, 4, 2]),  # stride 2, odd size
    (128, 7, 1, 2, 2, [1, 3]),  # two cards
])
def test_the_psconv_integer_kernel_is_exact_scheduled_and_tensorized(channels, size, stride, groups, parts,
                                                                      rates) -> None:
    from tvm import te

    from psdeploy.backends.tvm.int8_conv import psconv_int8, psconv_weights

    rng = np.random.default_rng(size)
    x = rng.integers(0, 256, (1, channels, size, size), dtype=np.uint8)
    packed = rng.integers(-128, 128, (channels, channels // groups, 3, 3), dtype=np.int8)
    expected = psconv_int(x, packed, stride, groups, parts, rates)
    for block in (16, 0):  # blocked, then NCHW (a layer whose parts do not fill blocks)
        stacked = psconv_weights(packed, groups, parts, block)
        shape = (1, channels // block, size, size, block) if block else x.shape
        data, weight = te.placeholder(shape, "uint8"), te.placeholder(stacked.shape, "int8")
        out = psconv_int8(data, weight, stride, groups, rates)
        func = te.create_prim_func([data, weight, out])
        copy, = func.body.block.alloc_buffers  # one zero row on top, the columns padded by the largest rate
        assert tuple(int(v) for v in copy.shape)[2:4] == (size + 1, size + 2 * max(rates))
        for each, scheduled in (_every_schedule(func, "psconv_int8") if block else [(func, False)]):
            y, asm = _run(each, [_blocked(x) if block else x, stacked], tuple(int(v) for v in out.shape))
            assert np.array_equal(_unblocked(y) if block else y, expected)
            assert "vpdpbusd" in asm or not scheduled  # (LLVM may find it in the unscheduled loops too)


def test_the_integer_reference_is_psconv() -> None:
    """The reference the kernels are held to computes what the PSConv operator does (integers, in float64)."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (1, 64, 9, 9))
    packed = rng.integers(-128, 128, (64, 32, 3, 3))
    for stride in (1, 2):
        expected = psconv(torch.tensor(x, dtype=torch.float64), torch.tensor(packed, dtype=torch.float64),
                          torch.zeros(64, dtype=torch.float64), stride, 2, 2, [1, 2, 2, 1])
        assert np.array_equal(psconv_int(x, packed, stride, 2, 2, [1, 2]), expected.numpy().astype(np.int64))


def _qdq_conv(path: Path, c_in: int, size: int, stride: int, x_zero: int, x_scale: float = 0.02,
              y_scale: float = 0.05, residual: bool = False) -> None:
    """A one-conv QDQ graph as onnxruntime's quantizer writes them: uint8 data with a zero point, int8 weight
    per output channel, int32 bias, uint8 output; with ``residual``, a second conv reads that output and adds it
    back before its own requantization (a bottleneck's last conv and its skip connection)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(c_in)
    c_out = 32
    w_scale = rng.uniform(0.002, 0.01, c_out).astype(np.float32)
    x_scale = np.float32(x_scale)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (np.array(x_scale), "xs"), (np.array(x_zero, np.uint8), "xz"),
        (rng.integers(-127, 128, (c_out, c_in, 3, 3), dtype=np.int8), "wq"), (w_scale, "ws"),
        (np.zeros(c_out, np.int8), "wz"), (rng.integers(-2000, 2000, c_out, dtype=np.int32), "bq"),
        (x_scale * w_scale, "bs"), (np.zeros(c_out, np.int32), "bz"),
        (np.array(np.float32(y_scale)), "ys"), (np.array(120, np.uint8), "yz")]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["bd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1], strides=[stride, stride]),
             helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    if residual:
        inits += [numpy_helper.from_array(a, n) for a, n in [
            (rng.integers(-127, 128, (c_out, c_out, 3, 3), dtype=np.int8), "wq2"), (np.float32(0.05) * w_scale, "bs2"),
            (np.array(np.float32(0.08)), "ss"), (np.array(3, np.uint8), "sz")]]
        nodes[-1].output[0] = "y1"
        nodes += [helper.make_node("DequantizeLinear", ["wq2", "ws", "wz"], ["wd2"], axis=0),
                  helper.make_node("DequantizeLinear", ["bq", "bs2", "bz"], ["bd2"], axis=0),
                  helper.make_node("Conv", ["y1", "wd2", "bd2"], ["c2"], pads=[1, 1, 1, 1]),
                  helper.make_node("QuantizeLinear", ["c2", "ys", "yz"], ["c2q"]),
                  helper.make_node("DequantizeLinear", ["c2q", "ys", "yz"], ["branch"]),
                  helper.make_node("Add", ["branch", "y1"], ["sum"]),
                  helper.make_node("QuantizeLinear", ["sum", "ss", "sz"], ["sq"]),
                  helper.make_node("DequantizeLinear", ["sq", "ss", "sz"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "qdq", [x], [y], inits), opset_imports=[helper.make_opsetid("", 19)])
    onnx.save(model, str(path))


def _lowered_qdq_conv(path: Path, c_in: int, size: int, stride: int, x_zero: int, convs=None, **graph):
    """``_qdq_conv`` (``graph``: its scales, ``residual``) written to ``path``, imported and lowered for llvm in
    NCHW16c with psdeploy's integer convs (``convs`` records which convs became integer); returns the module and
    the target."""
    from psdeploy.backends.tvm.build import import_onnx, lower
    from psdeploy.backends.tvm.layout import ConvLayout
    from psdeploy.backends.tvm.qdq import IntegerConvs

    _qdq_conv(path, c_in, size, stride, x_zero, **graph)
    target, layout = parse_target("llvm"), ConvLayout("nchwc", 16)
    convs = IntegerConvs() if convs is None else convs
    return lower(import_onnx(path, (1, c_in, size, size), layout), target, 0, layout, convs), target


@needs_vnni
@pytest.mark.parametrize(("c_in", "stride"), [(3, 1), (32, 2)])
def test_a_qdq_conv_with_a_zero_point_runs_as_onnxruntime_runs_it(c_in, stride, tmp_path) -> None:
    """The border correction of a nonzero zero point (the stem's data has one), through the whole int8
    lowering: integer conv, requantization, blocked layout; at most one output step from onnxruntime (its
    QLinearConv rounds ties to even), and equal almost everywhere."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from psdeploy.backends.tvm.qdq import IntegerConvs

    path, size, convs = tmp_path / "qdq.onnx", 11, IntegerConvs()
    mod, target = _lowered_qdq_conv(path, c_in, size, stride, x_zero=37, convs=convs)
    x = np.random.default_rng(0).uniform(-0.7, 4.3, (1, c_in, size, size)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target(target.tvm_target)), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy()
    assert convs.int8 == [True]
    assert np.abs(got - expected).max() <= 0.05 * 1.001 and np.mean(got == expected) >= 0.99


@pytest.mark.parametrize(("options", "message"), [
    ({"target": "cuda"}, "--precision int8: TVM's int8 kernels are built for CPUs; --target cuda builds f32"),
    ({"target": "llvm", "mcpu": "skylake-avx512"}, "TVM's int8 kernels need AVX512-VNNI, which the target's CPU skylake-avx512 lacks"),
    ({"target": "llvm", "layout": "nhwc"}, "--layout nhwc: TVM's int8 convs are built in NCHW{16}c, direct"),
    ({"target": "llvm", "winograd": "f2"}, "--winograd f2: TVM's int8 convs are built in NCHW{16}c, direct"),
])
def test_int8_where_tvm_cannot_build_it_is_refused_in_one_line(options, message, tmp_path) -> None:
    with pytest.raises(PsdeployError, match=message.replace("(", r"\(").replace("{", r"\{").replace("}", r"\}")):
        api.compile(str(DEMO_CHECKPOINT), output=tmp_path / "out", precision="int8", calibration="digits",
                    untuned=True, tuning_db=tmp_path / "db", **options)
    assert not (tmp_path / "out").exists()


@needs_vnni
def test_a_residual_add_joins_the_int8_tiles_write_back(tmp_path) -> None:
    """The residual's dequantize is computed into the add, so the whole epilogue, the add and both
    requantizations, runs in the register tile's write-back: no second pass over the output (a bottleneck's
    last 1x1 at 256@56 ran 2.7x slower with one), and the kernel computes what the unscheduled one does."""
    import tvm
    from tvm import s_tir

    from psdeploy.backends.tvm.int8_tiling import int8_tiled, register_int8_rule

    register_int8_rule()
    mod, target = _lowered_qdq_conv(tmp_path / "qdq.onnx", 32, 14, 1, x_zero=0, residual=True)
    name = next(gv.name_hint for gv in mod.functions  # the second conv's kernel: the skip's dequantize comes first
                if gv.name_hint.startswith("fused_cast") and "conv2d_NCHWc_int8" in gv.name_hint)
    func = mod[name].with_attr("global_symbol", "main")
    sch = s_tir.Schedule(func, seed=1)
    space = int8_tiled(sch, sch.get_sblock("conv2d_NCHWc_int8"))[-1]
    blocks = {space.get(b).name_hint for b in space.get_child_blocks(space.get_sblock("root"))}
    assert all(b.startswith(("conv2d_NCHWc_int8", "pad_int8")) for b in blocks), blocks
    rng = np.random.default_rng(0)
    args = [rng.integers(0, 256, [int(v) for v in p.ty.shape]).astype(str(p.ty.dtype)) if "int" in str(p.ty.dtype)
            else rng.uniform(0.5, 1.5, [int(v) for v in p.ty.shape]).astype(str(p.ty.dtype)) for p in func.params]
    outputs = []
    for f in (func, space.mod["main"]):
        tensors = [tvm.runtime.tensor(a, tvm.cpu()) for a in args]
        tvm.compile(tvm.IRModule({"main": f}), target=tvm.target.Target(target.tvm_target))["main"](*tensors)
        outputs.append(tensors[-1].numpy())
    assert np.array_equal(*outputs)


def _relax_calls(mod) -> list:
    """The values bound in ``mod``'s main function, in binding order."""
    return [binding.value for block in mod["main"].body.blocks for binding in block.bindings]


def _relax_ops(mod) -> list[str]:
    """The ops of ``mod``'s main function, in binding order; a cast is named with its dtype."""
    ops = []
    for value in _relax_calls(mod):
        op = getattr(getattr(value, "op", None), "name", "")
        ops.append(f"{op}:{value.ty.dtype}" if op == "relax.astype" else op)
    return ops


def _tvm_against_qdq_graph(path: Path, mod, target, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``mod`` (the QDQ graph at ``path``, lowered) run on ``x`` in TVM, beside that graph run op by op in
    onnxruntime (graph optimizations off: QuantizeLinear, Conv, Add... as written, no QLinear fusion)."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    literal = ort.SessionOptions()
    literal.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    expected = ort.InferenceSession(str(path), literal, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target(target.tvm_target)), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy(), expected


def test_requantization_is_one_multiply_add_per_input_with_no_divide(tmp_path) -> None:
    """After the integer-conv pass, a residual block's requantizations divide four times and cast the second
    conv's clamped output to uint8 and back; folded, every rounding reads one multiply-add per input, and the
    round trip, the one inside a kernel, is gone (the first conv's output stays uint8: the second conv reads it)."""
    from psdeploy.backends.tvm.build import import_onnx
    from psdeploy.backends.tvm.layout import ConvLayout
    from psdeploy.backends.tvm.qdq import IntegerConvs, integer_convs_pass
    from psdeploy.backends.tvm.requantize import requantization_pass

    path = tmp_path / "qdq.onnx"
    _qdq_conv(path, 32, 14, 1, x_zero=0, residual=True)
    integer = integer_convs_pass(IntegerConvs())(import_onnx(path, (1, 32, 14, 14), ConvLayout("nchwc", 16)))
    before, after = _relax_ops(integer), _relax_ops(requantization_pass()(integer))
    assert before.count("relax.divide") == 4 and "relax.divide" not in after
    assert after.count("relax.astype:float32") == before.count("relax.astype:float32") - 1
    assert after.count("relax.astype:uint8") == before.count("relax.astype:uint8") - 1


@needs_vnni
def test_a_folded_residual_block_runs_as_its_qdq_graph_runs(tmp_path) -> None:
    """The folded requantizations change only float rounding: against the QDQ graph run op by op (onnxruntime,
    graph optimizations off), at most one output step, equal almost everywhere. This graph's scales meet at
    5/8 (0.05 over 0.08), which puts an eighth of the residual sums on exact halves, where any change of
    rounding shows; calibrated scales rarely do."""
    path, size = tmp_path / "qdq.onnx", 14
    mod, target = _lowered_qdq_conv(path, 32, size, 1, x_zero=0, residual=True)
    x = np.random.default_rng(1).uniform(0, 5, (1, 32, size, size)).astype(np.float32)
    got, expected = _tvm_against_qdq_graph(path, mod, target, x)
    assert np.abs(got - expected).max() <= 0.08 * 1.001 and np.mean(got == expected) >= 0.99


def _qdq_gemm(path: Path, x_zero: int) -> None:
    """A classifier as onnxruntime's quantizer writes it: uint8 data, a Gemm with an int8 weight per output,
    int32 bias, uint8 output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(x_zero)
    w_scale = rng.uniform(0.002, 0.01, 10).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (np.array(np.float32(0.02)), "xs"), (np.array(x_zero, np.uint8), "xz"),
        (rng.integers(-127, 128, (10, 64), dtype=np.int8), "wq"), (w_scale, "ws"), (np.zeros(10, np.int8), "wz"),
        (rng.integers(-2000, 2000, 10, dtype=np.int32), "bq"), (np.float32(0.02) * w_scale, "bs"),
        (np.zeros(10, np.int32), "bz"), (np.array(np.float32(0.03)), "ys"), (np.array(128, np.uint8), "yz")]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["bd"], axis=0),
             helper.make_node("Gemm", ["xd", "wd", "bd"], ["g"], transB=1),
             helper.make_node("QuantizeLinear", ["g", "ys", "yz"], ["gq"]),
             helper.make_node("DequantizeLinear", ["gq", "ys", "yz"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "gemm", [x], [y], inits), opset_imports=[helper.make_opsetid("", 19)])
    onnx.save(model, str(path))


@pytest.mark.parametrize("x_zero", [0, 37])
def test_a_quantized_classifier_is_an_integer_conv_that_runs_as_its_qdq_graph_runs(x_zero, tmp_path) -> None:
    """The Gemm becomes the integer 1x1 conv it is: it reads its uint8 data and its int8 weight as they are (int32
    sums, a nonzero data zero point corrected by the weight's row sums, 10 outputs padded to 16 and sliced), and
    computes what the QDQ graph does, op by op, to one step."""
    from psdeploy.backends.tvm.build import import_onnx, lower
    from psdeploy.backends.tvm.layout import ConvLayout
    from psdeploy.backends.tvm.qdq import IntegerConvs, integer_convs_pass

    path = tmp_path / "gemm.onnx"
    _qdq_gemm(path, x_zero)
    integer = integer_convs_pass(IntegerConvs())(import_onnx(path, (1, 64)))
    ops = _relax_ops(integer)
    assert "relax.matmul" not in ops
    conv = _relax_calls(integer)[ops.index("relax.nn.conv2d")]
    assert (str(conv.args[0].ty.dtype), str(conv.args[1].ty.dtype), str(conv.ty.dtype)) == ("uint8", "int8", "int32")
    target, layout = parse_target("llvm"), ConvLayout("nchwc", 16)
    mod = lower(import_onnx(path, (1, 64), layout), target, 0, layout, IntegerConvs())
    x = np.random.default_rng(2).uniform(-0.5, 4.5, (1, 64)).astype(np.float32)
    got, expected = _tvm_against_qdq_graph(path, mod, target, x)
    assert np.abs(got - expected).max() <= 0.03 * 1.001 and np.mean(got == expected) >= 0.9


@needs_vnni
def test_every_pixel_tile_the_int8_rule_samples_survives_metaschedules_postprocessing(tmp_path) -> None:
    """MetaSchedule re-samples a design space's tiles and runs its postprocessors on each candidate; one that
    fails is dropped unmeasured. The tensorized tile loops once failed them for every pixel tile but 1, so
    tuning measured only the slowest tiles (2x the best one's time at 128@28)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.schedule import Trace

    from psdeploy.backends.tvm.int8_tiling import register_int8_rule
    from psdeploy.backends.tvm.tuning import drop_log_files, tune_contexts

    mod, target = _lowered_qdq_conv(tmp_path / "qdq.onnx", 32, 14, 1, x_zero=0)
    register_int8_rule()
    task = next(t for t in ms.relax_integration.extract_tasks(mod, tvm.target.Target(target.tvm_target))
                if "int8" in t.task_name)
    work_dir = str(tmp_path / "ms")
    (context,), _ = tune_contexts([task], work_dir, batch=8)  # the contexts tune() searches with
    drop_log_files(work_dir)
    generator = context.space_generator
    pixel_tiles = set()
    for space in generator.generate_design_space(context.mod):
        for seed in range(1, 9):
            sch = tvm.s_tir.Schedule(context.mod, seed=seed)
            Trace(space.trace.insts, {}).apply_to_schedule(sch, remove_postproc=True)  # decisions re-sampled
            assert all(p.apply(sch) for p in generator.postprocs), sch.trace
            pixel_tiles |= {int(v[-1]) for inst, v in sch.trace.decisions.items()
                            if inst.kind.name == "SamplePerfectTile"}
    assert pixel_tiles - {1}


@needs_vnni
def test_an_integer_conv_tunes_in_the_int8_rules_space_and_stays_exact(tmp_path) -> None:
    """MetaSchedule tunes the int8 conv with psdeploy's rule (its records replay tensorized from the database),
    and the tuned module computes what the untuned one does."""
    import tvm
    from tvm import relax

    from psdeploy.backends.tvm.build import post_tuning_passes
    from psdeploy.backends.tvm.tuning import tune
    from psdeploy.backends.tvm.tuning_db import TuningDatabase

    mod, target = _lowered_qdq_conv(tmp_path / "qdq.onnx", 32, 14, 1, x_zero=0)
    x = np.random.default_rng(0).uniform(0, 4, (1, 32, 14, 14)).astype(np.float32)
    tvm_target = tvm.target.Target(target.tvm_target)

    def run(module) -> np.ndarray:
        vm = relax.VirtualMachine(tvm.compile(module, target=tvm_target), tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy()

    database, summary = tune(mod, target, TuningDatabase(tmp_path / "db", target), trials=8)
    assert summary.trials_measured > 0 and not summary.tasks_all_failed
    with tvm_target, database:
        tuned = tvm.transform.Sequential(post_tuning_passes(target))(mod)
    conv = next(f for gv, f in tuned.functions.items() if "conv2d_NCHWc_int8" in gv.name_hint)
    assert "psdeploy_dot_16x4_vnni" in str(conv.script()) or "vpdpbusd" in str(conv.script())
    assert np.array_equal(run(tuned), run(mod))


@needs_vnni
def test_a_deadline_run_ends_when_every_tasks_space_is_spent(tmp_path) -> None:
    """The int8 rule's spaces hold few schedules: once a task's search finds nothing left to measure twice in
    a row, it gets no more batches (MetaSchedule's own five empty searches per task spun most of an hour's
    budget on a ResNet-50), and the run ends before its deadline, saying why."""
    from psdeploy.backends.tvm.scheduler import SPENT_AFTER
    from psdeploy.backends.tvm.tuning import tune
    from psdeploy.backends.tvm.tuning_db import TuningDatabase

    mod, target = _lowered_qdq_conv(tmp_path / "qdq.onnx", 16, 7, 1, x_zero=0)
    trials_after_each_batch: list[int] = []
    _, summary = tune(mod, target, TuningDatabase(tmp_path / "db", target), trials=0, time_s=3600,
                      on_batch=trials_after_each_batch.append)
    empty = sum(1 for before, after in zip([0, *trials_after_each_batch], trials_after_each_batch) if after == before)
    assert summary.stopped_by == "search space" and summary.trials_measured > 0
    assert 0 < empty <= SPENT_AFTER * summary.tasks_tuned


@needs_vnni
def test_int8_records_replay_when_a_fresh_process_opens_the_database(tmp_path) -> None:
    """The records tensorize with psdeploy's VNNI intrinsic: a process that opened the database before
    registering it set every int8 record aside as unreplayable (a whole int8 tuning lost on the next build)."""
    import subprocess
    import sys

    from psdeploy.backends.tvm.tuning import tune
    from psdeploy.backends.tvm.tuning_db import RECORDS, UNREPLAYABLE, TuningDatabase

    mod, target = _lowered_qdq_conv(tmp_path / "qdq.onnx", 16, 7, 1, x_zero=0)
    db = TuningDatabase(tmp_path / "db", target)
    _, summary = tune(mod, target, db, trials=8)
    assert summary.trials_measured > 0
    opened_anew = ("import sys; from pathlib import Path; from psdeploy.backends import parse_target; "
                   "from psdeploy.backends.tvm.tuning_db import TuningDatabase; "
                   "print(len(TuningDatabase(Path(sys.argv[1]), parse_target('llvm')).open()))")
    loaded = subprocess.run([sys.executable, "-c", opened_anew, str(tmp_path / "db")], capture_output=True,
                            text=True, check=True).stdout
    stored = len((db.directory / RECORDS).read_text().splitlines())
    assert int(loaded) == stored == summary.trials_measured and not (db.directory / UNREPLAYABLE).exists()


def test_another_calibration_gives_the_same_kernels_to_tune(tmp_path) -> None:
    """Per-tensor scales reach the kernels as tensors, not literals: a database tuned on one calibration
    holds the schedules of a build calibrated on other data (with literals, none of its records applied)."""
    import tvm
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    def workloads(name: str, x_scale: float, y_scale: float) -> set[int]:
        mod, target = _lowered_qdq_conv(tmp_path / f"{name}.onnx", 16, 9, 1, x_zero=7, x_scale=x_scale,
                                        y_scale=y_scale)
        tasks = ms.relax_integration.extract_tasks(mod, tvm.target.Target(target.tvm_target))
        return {tvm_ffi.structural_hash(task.dispatched[0]) for task in tasks}

    first = workloads("a", 0.02, 0.05)
    assert first and first == workloads("b", 0.031, 0.07)
