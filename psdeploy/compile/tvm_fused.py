"""TVM's side of the ``fused`` lowering: one TE computation per ``ai.psdeploy::PSConv`` node.

Output block ``ob`` of every card reads, in reduction slot ``j``, input block
``(ob + j) % parts`` at the rate the lattice gives that pair: no branch, no shuffle,
no intermediate tensor, and exactly the multiply-adds of a plain 3x3 conv. On the
released (cyclic) lattice the rate depends on ``j`` alone, so MetaSchedule sees a
conv-like reduction whose only irregularity is one small select per kernel tap.
The ONNX importer of TVM 0.27 has no hook for foreign operators, so the converter is
added to its operator table only for the duration of one import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from psdeploy.export.psconv_onnx import OP_TYPE


def _rate_expr(ob, j, parts: int, rates: list[int]):
    """The rate of (output block ob, slot j) as a TIR expression; a select on j alone when cyclic."""
    from tvm import tirx

    table = [[rates[o * parts + (o + k) % parts] for k in range(parts)] for o in range(parts)]
    cyclic = all(row == table[0] for row in table)
    default = max(set(table[0]), key=table[0].count) if cyclic else 1
    expr = tirx.const(default, "int32")
    for o in range(1 if cyclic else parts):
        for k in range(parts):
            if table[o][k] != default:
                cond = (j == k) if cyclic else tirx.all(ob == o, j == k)
                expr = tirx.Select(cond, tirx.const(table[o][k], "int32"), expr)
    return expr


def psconv_compute(x, weight, stride: int, groups: int, parts: int, rates: list[int]):
    """TE: ``y[n, o, h, w] = sum_{j, r, kh, kw} x[.., block (ob + j) % parts, at its rate] * weight``."""
    from tvm import te, topi

    n, _, height, width = (int(v) for v in x.shape)
    c_out, c_in_card = int(weight.shape[0]), int(weight.shape[1])
    out_card, bo, bi = c_out // groups, c_out // (groups * parts), c_in_card // parts
    pad = max(rates)
    padded = topi.nn.pad(x, [0, 0, pad, pad], [0, 0, pad, pad], name="psconv_pad")
    j = te.reduce_axis((0, parts), "slot")
    r = te.reduce_axis((0, bi), "rc")
    kh = te.reduce_axis((0, 3), "kh")
    kw = te.reduce_axis((0, 3), "kw")

    def body(b, o, h, w):
        ob = (o % out_card) // bo
        rate = _rate_expr(ob, j, parts, rates)
        c = ((ob + j) % parts) * bi + r
        return te.sum(
            padded[b, (o // out_card) * c_in_card + c, h * stride + pad + (kh - 1) * rate,
                   w * stride + pad + (kw - 1) * rate] * weight[o, c, kh, kw],
            axis=[j, r, kh, kw],
        )

    shape = (n, c_out, (height - 1) // stride + 1, (width - 1) // stride + 1)
    return te.compute(shape, body, name="psconv_fused")


def _converter():
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    class PSConvConverter(OnnxOpConverter):
        """``ai.psdeploy::PSConv`` -> ``call_tir`` of :func:`psconv_compute` + bias."""

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            x, weight, bias = inputs[0], inputs[1], inputs[2]
            y = bb.emit_te(psconv_compute, x, weight, int(attr["strides"][0]), int(attr["group"]),
                           int(attr["parts"]), [int(v) for v in attr["rates"]], primfunc_name_hint="psconv_fused")
            return relax.op.add(y, relax.op.reshape(bias, (1, -1, 1, 1)))

    return PSConvConverter


@contextlib.contextmanager
def psconv_importable() -> Iterator[None]:
    """Let ``tvm.relax.frontend.onnx.from_onnx`` convert PSConv nodes while the block runs."""
    from tvm.relax.frontend.onnx import onnx_frontend

    original = onnx_frontend._get_convert_map
    converter = _converter()

    def with_psconv():
        return {**original(), OP_TYPE: converter}

    onnx_frontend._get_convert_map = with_psconv
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original
