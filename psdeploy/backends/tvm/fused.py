"""TVM's side of the ``fused`` lowering: one TE computation per ``ai.psdeploy::PSConv`` node.

Output block ``ob`` of every card reads, in slot ``j``, input block ``(ob + j) % parts``
at the rate the (cyclic) lattice gives slot ``j``: one reduction, no branch, no channel
shuffle, exactly the multiply-adds of a plain 3x3 conv. The only other data movement is
each slot's padded, channel-rotated view of the input, which MetaSchedule may compute
where it is consumed.
The ONNX importer of TVM 0.27 has no hook for foreign operators, so the converter is
added to its operator table only for the duration of one import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from psdeploy.errors import PsdeployError
from psdeploy.rewrite.lowerings.fused_op import OP_TYPE


def slot_rates(parts: int, rates: list[int]) -> list[int]:
    """Rate of slot j (output block ob reads input block (ob + j) % parts); the lattice must be cyclic."""
    table = [[rates[o * parts + (o + j) % parts] for j in range(parts)] for o in range(parts)]
    if any(row != table[0] for row in table):
        raise PsdeployError(f"PSConv rates {rates}: not cyclic over output blocks; the fused TVM kernel "
                            f"needs every output block to see the same rate in each slot (use --lowering grouped)")
    return table[0]


def slot_weights(weight: np.ndarray, groups: int, parts: int) -> list[np.ndarray]:
    """Per slot j, ``(C_out, C_in_block, 3, 3)``: the kernels output block ob applies to input block (ob+j)%parts."""
    c_out, c_in_card = weight.shape[:2]
    out_card, bi = c_out // groups, c_in_card // parts
    ob = (np.arange(c_out) % out_card) // (out_card // parts)
    out = []
    for j in range(parts):
        columns = ((ob + j) % parts)[:, None] * bi + np.arange(bi)[None, :]
        out.append(np.ascontiguousarray(np.take_along_axis(weight, columns[:, :, None, None], axis=1)))
    return out


def psconv_compute(x, *weights, stride: int, groups: int, rates: list[int]):
    """TE: ``y[n, o] = sum_j sum_{r, kh, kw} view_j[n, block ob, at rate_j] * weights[j][o, r]``.

    ``view_j`` is x padded by rate_j with each card's channel blocks rotated by j, so output
    block ob finds its slot-j input block at block ob: every index is affine and every rate a
    constant, which MetaSchedule's multi-level tiling needs (a select or a table lookup in the
    index makes TIR's region analysis give the read a variable extent, and the rule refuses
    the block). Each slot reads its own view and weight: the rule also refuses a block that
    reads one buffer twice.
    """
    from tvm import te, tirx

    n, c_in, height, width = (int(v) for v in x.shape)
    c_out, bi = int(weights[0].shape[0]), int(weights[0].shape[1])
    in_card, out_card = c_in // groups, c_out // groups
    bo = out_card * bi // in_card

    def view(j: int, d: int):
        def element(b, c, h, w):
            inside = tirx.all(h >= d, h < height + d, w >= d, w < width + d)
            source = (c // in_card) * in_card + (c % in_card + j * bi) % in_card
            return tirx.if_then_else(inside, x[b, source, h - d, w - d], tirx.const(0.0, x.dtype))

        return te.compute((n, c_in, height + 2 * d, width + 2 * d), element, name=f"psconv_view{j}")

    views = [view(j, d) for j, d in enumerate(rates)]
    r = te.reduce_axis((0, bi), "rc")
    kh = te.reduce_axis((0, 3), "kh")
    kw = te.reduce_axis((0, 3), "kw")

    def body(b, o, h, w):
        c = (o // out_card) * in_card + ((o % out_card) // bo) * bi + r
        terms = [views[j][b, c, h * stride + kh * d, w * stride + kw * d] * weights[j][o, r, kh, kw]
                 for j, d in enumerate(rates)]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return te.sum(total, axis=[r, kh, kw])

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
            parts, groups = int(attr["parts"]), int(attr["group"])
            rates = slot_rates(parts, [int(v) for v in attr["rates"]])
            slots = [relax.const(w) for w in slot_weights(weight.value.numpy(), groups, parts)]
            y = bb.emit_te(psconv_compute, x, *slots, stride=int(attr["strides"][0]), groups=groups, rates=rates,
                           primfunc_name_hint="psconv_fused")
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
