"""TVM's side of the ``fused`` lowering: one TE computation per ``ai.psdeploy::PSConv`` node.

Output block ``ob`` of every card reads, in slot ``j``, input block ``(ob + j) % parts``
at the rate the (cyclic) lattice gives slot ``j``: one reduction, no branch, no channel
shuffle, exactly the multiply-adds of a plain 3x3 conv. The only other data movement is
each slot's padded, channel-rotated view of the input, which MetaSchedule may compute
where it is consumed.
The ONNX importer of TVM 0.27 has no hook for foreign operators, so the converter is
added to its operator table only for the duration of one import.

In the blocked layout (``--layout nchwc``) the layer is one kernel over ``NCHW{b}c`` tensors:
a channel part is a whole number of blocks, so the slot views rotate block indices and every
block is read at its rate where it lies. Relax's ``ConvertLayout`` knows only its own ops, so
the importer writes the layer as a *placeholder* ``conv2d`` over the packed weight (which
``ConvertLayout`` blocks like any conv, and no other op need move), and records the packed
weight's digest: the conv legalization (``layout.py``) finds the layer by its weight and
emits this kernel instead, so a PSConv layer moves no data at all. Its block names psdeploy's
register-tiled schedule rule (``register_tiling.py``), which MetaSchedule tunes in place of its
generic tiling; each view is computed whole before the kernel.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from psdeploy.backends.tvm.register_tiling import RULE
from psdeploy.errors import PsdeployError
from psdeploy.rewrite.lowerings.fused_op import OP_TYPE

SLOT_AXIS = "slot"  # the blocked kernel's reduction over its slots (kernels.py counts its work by it)


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

    NCHW data with ``(C_out, bi, 3, 3)`` slot weights, or ``NCHW{b}c`` data with ``OIHW{b}i{b}o`` ones:
    the same sum with channels counted in vector blocks (a part is then ``bi`` blocks wide, each slot
    view rotates whole blocks, and the lanes of a block are one more reduction and one more output axis).
    Blocked, the slots are one more reduction axis (a choice among the four products, which the
    register-tiled rule of ``register_tiling.py`` unrolls away), so each step is one multiply-add into an
    accumulator, as in a plain conv, instead of four products summed first; the views are computed whole
    before the kernel.
    """
    from tvm import te, tirx

    n, c_in, height, width, *lanes = (int(v) for v in x.shape)
    c_out, bi = int(weights[0].shape[0]), int(weights[0].shape[1])
    in_card, out_card = c_in // groups, c_out // groups
    bo = out_card * bi // in_card

    rule, at_root = ({"schedule_rule": RULE}, {"schedule_rule": "None"}) if lanes else ({}, {})

    def view(j: int, d: int):
        def element(b, c, h, w, *lane):
            inside = tirx.all(h >= d, h < height + d, w >= d, w < width + d)
            source = (c // in_card) * in_card + (c % in_card + j * bi) % in_card
            return tirx.if_then_else(inside, x[(b, source, h - d, w - d, *lane)], tirx.const(0.0, x.dtype))

        return te.compute((n, c_in, height + 2 * d, width + 2 * d, *lanes), element, name=f"psconv_view{j}",
                          attrs=at_root)

    views = [view(j, d) for j, d in enumerate(rates)]
    r = te.reduce_axis((0, bi), "rc")
    kh = te.reduce_axis((0, 3), "kh")
    kw = te.reduce_axis((0, 3), "kw")
    in_lane = [te.reduce_axis((0, lanes[0]), "ri")] if lanes else []
    slot = [te.reduce_axis((0, len(rates)), SLOT_AXIS)] if lanes else []

    def body(b, o, h, w, *out_lane):
        c = (o // out_card) * in_card + ((o % out_card) // bo) * bi + r
        terms = [views[j][(b, c, h * stride + kh * d, w * stride + kw * d, *in_lane)]
                 * weights[j][(o, r, kh, kw, *in_lane, *out_lane)] for j, d in enumerate(rates)]
        if slot:  # one multiply-add per step, as in a plain conv; the rule unrolls the slot loop, folding the choice
            chosen = terms[-1]
            for j in reversed(range(len(terms) - 1)):
                chosen = tirx.if_then_else(slot[0] == j, terms[j], chosen)
            return te.sum(chosen, axis=[r, *slot, kh, kw, *in_lane])
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return te.sum(total, axis=[r, kh, kw])

    shape = (n, c_out, (height - 1) // stride + 1, (width - 1) // stride + 1, *lanes)
    return te.compute(shape, body, name="psconv_fused", attrs=rule)


def block_weight(weight: np.ndarray, in_block: int, out_block: int) -> np.ndarray:
    """``(O, I, kh, kw)`` -> ``OIHW{in_block}i{out_block}o``, the layout ConvertLayout gives conv weights."""
    o, i, kh, kw = weight.shape
    blocked = weight.reshape(o // out_block, out_block, i // in_block, in_block, kh, kw)
    return np.ascontiguousarray(blocked.transpose(0, 2, 4, 5, 3, 1))


def unblock_weight(blocked: np.ndarray) -> np.ndarray:
    """The inverse of :func:`block_weight`."""
    oc, ic, kh, kw, ib, ob = blocked.shape
    return np.ascontiguousarray(blocked.transpose(0, 5, 1, 4, 2, 3).reshape(oc * ob, ic * ib, kh, kw))


@dataclass(frozen=True)
class PlaceholderLayer:
    """What a placeholder conv stands for: one PSConv layer over its packed weight."""

    stride: int
    groups: int
    parts: int
    rates: tuple[int, ...]  # per slot

    def blocks(self, weight_shape: tuple[int, ...], block: int) -> bool:
        """Whether every channel part of the layer is a whole number of ``block``-channel blocks."""
        c_out, c_in_card = weight_shape[:2]
        return (c_in_card // self.parts) % block == 0 and (c_out // (self.groups * self.parts)) % block == 0

    def emit(self, bb, data, packed: np.ndarray, block: int):
        """The layer's kernel on ``data`` (NCHW, or ``NCHW{block}c`` when ``block``) -- the bias is the graph's add."""
        from tvm import relax

        slots = slot_weights(packed, self.groups, self.parts)
        if block:
            slots = [block_weight(w, block, block) for w in slots]
        return bb.call_te(psconv_compute, data, *(relax.const(w) for w in slots), stride=self.stride,
                          groups=self.groups, rates=list(self.rates), primfunc_name_hint="psconv_fused")


_PLACEHOLDERS: dict[str, PlaceholderLayer] = {}  # digest of the packed weight -> the layer it is


def _digest(weight: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(weight, dtype=np.float32).tobytes()).hexdigest()


def placeholder_layer(weight: np.ndarray) -> PlaceholderLayer | None:
    """The PSConv layer a conv over this (packed, OIHW) weight stands for, if the importer wrote it."""
    return _PLACEHOLDERS.get(_digest(weight))


def packed_weight(weight) -> np.ndarray:
    """A PSConv node's packed weight: its constant, or in a QDQ graph (an int8 build) the int8 constant its
    DequantizeLinear reads, so the placeholder is found again by its integer weight."""
    from tvm import relax

    if isinstance(weight, relax.Call) and weight.op.name == "relax.dequantize":
        weight = weight.args[0]
    return weight.value.numpy()


def _converter(placeholders: bool):
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    class PSConvConverter(OnnxOpConverter):
        """``ai.psdeploy::PSConv`` -> ``call_tir`` of :func:`psconv_compute` + bias."""

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            x, weight, bias = inputs[0], inputs[1], inputs[2]
            parts, groups = int(attr["parts"]), int(attr["group"])
            rates = slot_rates(parts, [int(v) for v in attr["rates"]])
            stride, packed = int(attr["strides"][0]), packed_weight(weight)
            layer = PlaceholderLayer(stride, groups, parts, tuple(rates))
            if placeholders or packed.dtype != np.float32:  # a quantized layer is left to qdq.py as a placeholder
                _PLACEHOLDERS[_digest(packed)] = layer
                y = bb.emit(relax.op.nn.conv2d(x, weight, strides=stride, padding=1, groups=groups))
            else:
                y = bb.emit(layer.emit(bb, x, packed, 0))
            return relax.op.add(y, relax.op.reshape(bias, (1, -1, 1, 1)))

    return PSConvConverter


@contextlib.contextmanager
def psconv_importable(placeholders: bool = False) -> Iterator[None]:
    """Let ``tvm.relax.frontend.onnx.from_onnx`` convert PSConv nodes while the block runs: into their
    kernel, or (``placeholders``, for a layout pass to move first) into placeholder convs."""
    from tvm.relax.frontend.onnx import onnx_frontend

    original = onnx_frontend._get_convert_map
    converter = _converter(placeholders)

    def with_psconv():
        return {**original(), OP_TYPE: converter}

    onnx_frontend._get_convert_map = with_psconv
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original
