"""int8 in TVM: onnxruntime's QDQ graph, imported into Relax, rewritten into integer convs.

TVM 0.27 imports QuantizeLinear/DequantizeLinear as ``relax.quantize``/``relax.dequantize`` and would
run every conv in fp32 on dequantized data. This pass makes each conv whose data is a per-tensor
uint8 dequantize and whose weight is a per-output-channel int8 dequantize of a constant (what the
quantizer writes, PSConv placeholders included) an integer ``conv2d`` (uint8 x int8, int32
accumulation) followed by ``acc * (s_x * s_w[o])`` in fp32: the bias add, the output QuantizeLinear
(whose clamp at the zero point is the relu the quantizer removed) and a residual add then follow it
as the graph has them, and ``FuseOps`` puts that whole chain into the conv's kernel, as its epilogue.
The classifier's matmul (ONNX Gemm) of such operands becomes the integer 1x1 conv it is.

A conv pads with 0 where the quantized zero is the zero point ``zp``: ``sum w (x - zp)`` over the
padded window is ``conv(x) - zp * conv(ones)``, whose second term is a constant computed here
(``integer_reference.py``); it is nonzero only for data with ``zp != 0`` (in ResNets the stem's input:
every other conv reads a relu's output, whose zero point is 0).

Every other quantize/dequantize becomes the elementwise arithmetic it stands for, so the layout
pass (which knows only elementwise ops and convs) keeps the graph blocked; on constants it is
computed here (the biases).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from psdeploy.backends.tvm.fused import placeholder_layer
from psdeploy.backends.tvm.integer_reference import conv_int, psconv_int

DEQUANTIZE, QUANTIZE, CONV, MATMUL = "relax.dequantize", "relax.quantize", "relax.nn.conv2d", "relax.matmul"
QUANTIZED_RANGE = {"uint8": (0, 255), "int8": (-128, 127)}
MATMUL_BLOCK = 16  # a classifier's outputs padded to whole blocks of the blocked conv it runs as


@dataclass
class IntegerConvs:
    """What the pass did, per conv in graph order: True where it became an integer conv."""

    int8: list[bool] = field(default_factory=list)


def op_name(expr) -> str:
    from tvm import relax

    return expr.op.name if isinstance(expr, relax.Call) and hasattr(expr.op, "name") else ""


def _constant(expr) -> np.ndarray | None:
    from tvm.ir.expr import Constant

    return expr.value.numpy() if isinstance(expr, Constant) else None


def _pair(values) -> tuple[int, int]:
    return int(values[0]), int(values[-1])


def _border_correction(call, weight: np.ndarray, shape: tuple[int, ...], zp: int) -> np.ndarray:
    """``zp * conv(ones)`` of the conv ``call`` over data of ``shape`` (NCHW): int32, ``(1, C_out, H, W)``."""
    ones = np.ones((1, *shape[1:]), np.int64)
    layer = placeholder_layer(weight)
    a = call.attrs
    if layer is not None:
        y = psconv_int(ones, weight, layer.stride, layer.groups, layer.parts, list(layer.rates))
    else:
        pad = [int(v) for v in a.padding]
        y = conv_int(ones, weight, _pair(a.strides), (pad[0], pad[1], pad[2], pad[3]), _pair(a.dilation),
                     int(a.groups))
    return (zp * y).astype(np.int32)


def integer_convs_pass(record: IntegerConvs):
    """The Relax pass; ``record`` is filled as it runs."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class Rewriter(PyExprMutator):
        def visit_call_(self, call):
            call = self.visit_expr_post_order(call)
            name = op_name(call)
            if name == CONV:
                return self._conv(call)
            if name == MATMUL:
                return self._matmul(call)
            if name == QUANTIZE and _constant_parameters(call):
                return _quantize(call)
            return call  # a dequantize is kept until the convs that read it are rewritten (``ElementwiseQDQ``)

        def _bound(self, expr):
            return self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr

        def _conv(self, call):
            a = call.attrs
            operands = None
            if a.data_layout == "NCHW" and a.kernel_layout == "OIHW":
                operands = _integer_operands(self._bound(call.args[0]), self._bound(call.args[1]), weight_axis=0)
            record.int8.append(operands is not None)
            if operands is None:
                return call
            x_q, x_scale, x_zp, w_q, w_scale = operands
            acc = relax.op.nn.conv2d(x_q, relax.const(w_q), strides=a.strides, padding=a.padding,
                                     dilation=a.dilation, groups=a.groups, out_dtype="int32")
            if x_zp:
                acc = relax.op.subtract(acc, relax.const(_border_correction(call, w_q, _shape(x_q), x_zp)))
            return _rescaled(acc, x_scale * w_scale, _shape(call))

        def _matmul(self, call):
            """A classifier's ``x @ W.T`` (ONNX Gemm) of per-tensor uint8 data and a per-output int8 constant: the
            integer 1x1 conv it is (outputs padded to a multiple of 16 with zero weights, then sliced off), so the
            blocked VNNI kernel computes it from the int8 weight, where fp32 read four times the bytes."""
            weight = self._bound(call.args[1])
            transposed = op_name(weight) == "relax.permute_dims" and [int(v) for v in weight.attrs.axes] == [1, 0]
            weight = self._bound(weight.args[0]) if transposed else weight
            operands = _integer_operands(self._bound(call.args[0]), weight, weight_axis=0 if transposed else 1)
            if operands is None or len(_shape(operands[0])) != 2 or operands[3].ndim != 2:
                return call
            x_q, x_scale, x_zp, w_q, w_scale = operands
            w = w_q if transposed else w_q.T  # (N, K)
            (n, k), rows = w.shape, _shape(x_q)[0]
            padded = np.pad(w, [(0, -n % MATMUL_BLOCK), (0, 0)])[:, :, None, None]
            acc = relax.op.nn.conv2d(relax.op.reshape(x_q, (rows, k, 1, 1)), relax.const(padded), out_dtype="int32")
            acc = relax.op.strided_slice(relax.op.reshape(acc, (rows, padded.shape[0])), axes=[1], begin=[0], end=[n])
            if x_zp:
                correction = x_zp * w.astype(np.int64).sum(axis=1)
                acc = relax.op.subtract(acc, relax.const(correction.astype(np.int32).reshape(1, -1)))
            return _rescaled(acc, x_scale * w_scale, _shape(call))

    @mutator
    class ElementwiseQDQ(PyExprMutator):
        def visit_call_(self, call):
            call = self.visit_expr_post_order(call)
            return _dequantize(call) if op_name(call) == DEQUANTIZE and _constant_parameters(call) else call

    @tvm.transform.module_pass(opt_level=0, name="psdeploy.IntegerConvs")
    def transform(mod, _ctx):
        for rewriter in (Rewriter, ElementwiseQDQ):
            for gv, func in list(mod.functions.items()):
                if isinstance(func, relax.Function):
                    mod[gv] = rewriter(mod).visit_expr(func)
            mod = relax.transform.DeadCodeElimination()(mod)
        return mod

    return transform


def _integer_operands(data, weight, weight_axis: int):
    """``(x_q, x_scale, x_zp, w_q, w_scale)`` where ``data`` dequantizes uint8 per tensor and ``weight`` a constant
    int8 with zero points 0, per output channel along ``weight_axis``; else None."""
    if op_name(data) != DEQUANTIZE or op_name(weight) != DEQUANTIZE:
        return None
    x_q, x_scale, x_zp = data.args
    x_scale, x_zp = _constant(x_scale), _constant(x_zp)
    w_q, w_scale, w_zp = (_constant(v) for v in weight.args)
    if (w_q is None or w_q.dtype != np.int8 or np.any(w_zp) or int(weight.attrs.axis) != weight_axis
            or str(x_q.ty.dtype) != "uint8" or x_scale is None or x_scale.size != 1 or x_zp is None or x_zp.size != 1):
        return None
    return x_q, x_scale.astype(np.float32).reshape(()), int(x_zp.item()), w_q, w_scale.astype(np.float32)


def _rescaled(acc, scale: np.ndarray, shape: tuple[int, ...]):
    """``acc * scale`` in fp32, the scale (``s_x * s_w[o]``) over the channels of data of ``shape``."""
    from tvm import relax

    return relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(per_axis(scale, 1, shape)))


def _constant_parameters(call) -> bool:
    """Whether a quantize/dequantize has constant scale and zero point (else it is left as Relax's op)."""
    return _constant(call.args[1]) is not None and _constant(call.args[2]) is not None


def per_axis(values: np.ndarray, axis: int, shape: tuple[int, ...]) -> np.ndarray:
    """A scale or zero point broadcastable against data of ``shape`` along ``axis``. A per-tensor one is spread
    over the channels (axis 1): a scalar constant would become a literal in the fused kernel, making its
    workload, and so its tuning records, specific to one calibration; a tensor leaves only shapes in it."""
    if values.size == 1 and len(shape) >= 2:
        values, axis = np.full(shape[1], values.item(), values.dtype), 1
    if values.size == 1:
        return values.reshape(())
    broadcast = [1] * len(shape)
    broadcast[axis] = values.size
    return values.reshape(broadcast)


def _shape(x) -> tuple[int, ...]:
    return tuple(int(v) for v in x.ty.shape)


def _scale_and_zero(call) -> tuple[np.ndarray, np.ndarray]:
    """A quantize's or dequantize's constant scale and zero point, fp32, broadcastable against its data."""
    x, scale, zp = call.args
    axis, shape = int(call.attrs.axis), _shape(x)
    return (per_axis(_constant(scale).astype(np.float32), axis, shape),
            per_axis(_constant(zp).astype(np.float32), axis, shape))


def _dequantize(call):
    """``(x - zp) * scale`` in fp32: computed here on a constant, else as relax arithmetic."""
    from tvm import relax

    x = call.args[0]
    s, z = _scale_and_zero(call)
    value = _constant(x)
    if value is not None:
        return relax.const(((value.astype(np.float32) - z) * s).astype(np.float32))
    shifted = relax.op.astype(x, "float32")
    if np.any(z):
        shifted = relax.op.subtract(shifted, relax.const(z))
    return relax.op.multiply(shifted, relax.const(s))


def _quantize(call):
    """``clip(round(x / scale) + zp)`` in the output's integer type."""
    from tvm import relax

    x = call.args[0]
    dtype = str(call.attrs.out_dtype)
    low, high = QUANTIZED_RANGE[dtype]
    s, z = _scale_and_zero(call)
    q = relax.op.round(relax.op.divide(x, relax.const(s)))
    if np.any(z):
        q = relax.op.add(q, relax.const(z))
    clipped = relax.op.minimum(relax.op.maximum(q, relax.const(np.float32(low))), relax.const(np.float32(high)))
    return relax.op.astype(clipped, dtype)  # min/max, not clip: the layout pass moves them, not clip
