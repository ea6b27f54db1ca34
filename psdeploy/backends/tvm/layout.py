"""The data layout TVM compiles convolutions in, chosen per target.

ONNX graphs arrive in NCHW. Two rewrites are offered, both through Relax's ``ConvertLayout``
(layout transforms only where the layout changes; ``FoldConstant`` then applies the weights'
transforms at build time):

- ``nhwc``: channels innermost, every conv NHWC/OHWI.
- ``nchwc``: channels blocked by the target's vector width (16 floats on AVX-512, 8 on AVX2),
  every conv ``NCHW{b}c``/``OIHW{b}i{b}o`` and legalized to TOPI's ``conv2d_NCHWc``: the
  layout oneDNN and NeoCPU compute in, where one output block is one vector register (and
  MetaSchedule tunes it in psdeploy's register-tiled space, ``register_tiling.py``). The stem
  (3 input channels) reads its input as one block of 3 and writes blocks of ``b``, so the
  network's input is the first transform; relu, the bias and residual adds, pooling and the
  mean stay blocked, so the classifier's flatten is the only other. A conv whose channels per
  group do not fill blocks (PS-ResNeXt's 4-channel groups) stays NCHW, with a transform each side.

The defaults are what was measured (README, "Data layout"), not folklore: on x86 ``nchwc`` won
every case of the layout report and brought ResNet-50 to onnxruntime's speed; CUDA keeps the
exported NCHW (nothing measured on a GPU yet). Winograd convs read and write either NCHW or the
blocked layout, so a Winograd build keeps the target's layout (not NHWC).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psdeploy.backends.targets import Target
from psdeploy.backends.tvm import winograd
from psdeploy.backends.tvm.fused import PlaceholderLayer, placeholder_layer, unblock_weight
from psdeploy.backends.tvm.register_tiling import request_register_tiling
from psdeploy.errors import PsdeployError

DEFAULT_LAYOUT = {"cpu": "nchwc", "cuda": "nchw"}
CONV_LAYOUTS = {"nhwc": ["NHWC", "OHWI"]}  # data, weight: what ConvertLayout asks of relax.nn.conv2d
VECTOR_FLOATS = (("avx512f", 16), ("avx2", 8))  # fp32 lanes of the widest vector unit a CPU has


@dataclass(frozen=True)
class ConvLayout:
    """A conv layout as built: ``nchw``, ``nhwc``, or ``nchwc`` with its channel block."""

    name: str
    block: int = 0  # channels per block, for nchwc

    def __str__(self) -> str:  # as the manifest records it
        return f"nchw{self.block}c" if self.name == "nchwc" else self.name


NCHW = ConvLayout("nchw")


def channel_block(target: Target) -> int:
    """fp32 lanes of the target CPU's vectors: the channel block of ``nchwc``."""
    import tvm
    from tvm.target import codegen

    tvm_target = tvm.target.Target(target.tvm_target)
    for feature, lanes in VECTOR_FLOATS:
        if codegen.target_has_features(feature, tvm_target):
            return lanes
    return 4  # SSE


def resolve_layout(requested: str | None, target: Target, winograd_tile: int) -> ConvLayout:
    """The layout to build in: the one asked for, else the target's measured default."""
    if winograd_tile and requested == "nhwc":
        raise PsdeployError("--layout nhwc: Winograd convs are built in NCHW or NCHW{b}c; "
                            "give --layout nchw or nchwc (or no --layout) with --winograd")
    name = requested or DEFAULT_LAYOUT[target.device]
    if name == "nchwc":
        if target.device != "cpu":
            raise PsdeployError("--layout nchwc: blocks channels by a CPU's vector width; for --target cuda give "
                                "--layout nchw or nhwc")
        return ConvLayout(name, channel_block(target))
    return ConvLayout(name)


def _placeholder(weight) -> tuple[PlaceholderLayer, np.ndarray] | None:
    """The PSConv layer a conv's weight (OIHW, or blocked by ConvertLayout) stands for, with its packed
    OIHW weight; only a constant 3x3 weight is read and hashed."""
    from tvm.ir.expr import Constant

    if not isinstance(weight, Constant) or [int(v) for v in weight.ty.shape][2:4] != [3, 3]:
        return None
    value = weight.value.numpy()
    packed = unblock_weight(value) if value.ndim == 6 else value
    layer = placeholder_layer(packed)
    return (layer, packed) if layer else None


def blocked_conv_layouts(call, block: int) -> list[str] | None:
    """``[data, weight, output]`` layouts of one NCHW conv in blocks of ``block`` channels, or None
    where its channels per group do not fill whole blocks (for a PSConv placeholder: per part).
    A dense conv with fewer input channels than a block (the stem) reads them as one block."""
    weight = [int(v) for v in call.args[1].ty.shape]
    c_out, c_in_group = weight[0], weight[1]
    groups = int(call.attrs.groups)
    if call.attrs.data_layout != "NCHW" or call.attrs.kernel_layout != "OIHW" or (c_out // groups) % block:
        return None
    psconv = _placeholder(call.args[1])
    if psconv is not None:
        layer, packed = psconv
        return [f"NCHW{block}c", f"OIHW{block}i{block}o", f"NCHW{block}c"] if layer.blocks(packed.shape, block) \
            else None
    if c_in_group % block == 0:
        in_block = block
    elif groups == 1 and c_in_group < block:
        in_block = c_in_group
    else:
        return None
    return [f"NCHW{in_block}c", f"OIHW{in_block}i{block}o", f"NCHW{block}c"]


def _blocked_callback(block: int):
    def layouts(call) -> dict[str, list[str]]:
        if call.op.name != "relax.nn.conv2d":
            return {}  # every other op follows its inputs, as ConvertLayout infers
        return {"relax.nn.conv2d": blocked_conv_layouts(call, block) or ["NCHW", "OIHW"]}

    return layouts


def layout_passes(layout: ConvLayout) -> list:
    """Relax passes that move every conv to ``layout`` and fold the weights' transforms."""
    from tvm import relax

    t = relax.transform
    if layout.name == "nchw":  # as imported
        return []
    if layout.name == "nchwc":
        convert = t.ConvertLayout({}, _blocked_callback(layout.block))
    else:
        convert = t.ConvertLayout({"relax.nn.conv2d": CONV_LAYOUTS[layout.name]})
    # one transform per tensor, however many convs read it (a block's input feeds conv1 and the projection)
    return [convert, t.FoldConstant(), t.EliminateCommonSubexpr()]


def blocked_conv_legalization(winograd_tile: int = 0):
    """A ``relax.nn.conv2d`` legalization for a blocked build: a PSConv placeholder (``fused.py``) -> its
    kernel; with ``winograd_tile``, an eligible conv (NCHW or blocked) -> Winograd (``winograd.py``); a conv in
    ``NCHW{b}c`` -> TOPI's ``conv2d_NCHWc`` (Relax's own legalization refuses chunked layouts), scheduled by
    psdeploy's register-tiled rule; plain layouts keep Relax's."""

    def legalize(bb, call):
        from tvm import topi
        from tvm.relax.transform.legalize_ops.nn import _nn_conv2d

        if str(call.args[0].ty.dtype) == "uint8":  # an integer conv of an int8 build (qdq.py)
            from psdeploy.backends.tvm.int8_conv import legalize_integer_conv

            return legalize_integer_conv(bb, call)
        a = call.attrs
        blocked = len(a.data_layout) > 4
        psconv = _placeholder(call.args[1])
        if psconv is not None:
            layer, packed = psconv
            return layer.emit(bb, call.args[0], packed, int(call.args[1].ty.shape[-1]) if blocked else 0)
        if winograd_tile and winograd.eligible(call):
            return winograd.legalize_one(bb, call, winograd_tile)
        if not blocked:
            return _nn_conv2d(bb, call)
        conv = bb.call_te(topi.nn.conv2d_NCHWc, call.args[0], call.args[1], [int(v) for v in a.strides],
                          [int(v) for v in a.padding], [int(v) for v in a.dilation], a.data_layout, a.out_layout,
                          a.out_dtype or "float32", primfunc_name_hint="conv2d_NCHWc")
        request_register_tiling(bb, conv, "conv2d_NCHWc")
        return conv

    return legalize
