"""TVM's side of the ``fused`` lowering: one TE computation per ``ai.psdeploy::PSConv`` node.

Output block ``ob`` of every card reads, in slot ``j``, input block ``(ob + j) % parts``
at the rate the (cyclic) lattice gives slot ``j``: one reduction, no branch, no channel
shuffle, exactly the multiply-adds of a plain 3x3 conv.
The ONNX importer of TVM 0.27 has no hook for foreign operators, so the converter is
added to its operator table only for the duration of one import.

In the blocked layout (``--layout nchwc``, the CPU default) the layer is one kernel over ``NCHW{b}c``
tensors: a channel part is a whole number of blocks, so each slot reads its input block where it lies,
in one copy of the input (as a plain conv pads its input once), its columns padded by the largest rate and
one row of zeros above it, which every tap whose row falls outside the image reads. Relax's
``ConvertLayout`` knows only its own ops, so the importer writes the layer as a *placeholder* ``conv2d``
over the packed weight (which ``ConvertLayout`` blocks like any conv, and no other op need move), and
records the packed weight's digest: the conv legalization (``layout.py``) finds the layer by its weight and
emits this kernel instead, so a PSConv layer moves no data at all. Its block names psdeploy's
register-tiled schedule rule (``register_tiling.py``), which MetaSchedule tunes in place of its
generic tiling, and which offers it exactly the tiles of the plain conv it replaces.
In NCHW (MetaSchedule's own tiling) each slot reads a padded, channel-rotated view of its own.
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
    """TE: ``y[n, o] = sum_j sum_{r, kh, kw} x[n, block (ob + j) % parts of o's card, at rate_j] * weights[j][o, r]``.

    NCHW data with one ``(C_out, bi, 3, 3)`` weight per slot, or ``NCHW{b}c`` data with the slots' weights stacked
    as one ``(OCb, bi, slot, 3, 3, b, b)`` tensor (:func:`stacked_slot_weights`; a part is then ``bi`` blocks wide,
    and the lanes of a block are one more reduction and one more output axis).
    """
    n, _, _, _, *lanes = (int(v) for v in x.shape)
    if lanes:
        (stacked,) = weights
        return _blocked(x, stacked, stride, groups, rates)
    return _with_views(x, weights, stride, groups, rates)


def _output_shape(x, stride: int, c_out: int):
    n, _, height, width, *lanes = (int(v) for v in x.shape)
    return (n, c_out, (height - 1) // stride + 1, (width - 1) // stride + 1, *lanes)


def _blocked(x, weight, stride: int, groups: int, rates: list[int]):
    """One copy of the input, as a plain conv pads; slot ``j`` reads it at its rate's offset, in the input block
    it rotates to. The slots are a reduction axis (a choice among the products, which the register-tiled rule
    of ``register_tiling.py`` unrolls away), so each step is one multiply-add into an accumulator, as in a plain
    conv, and each slot's block index is resolved once per output block.

    The copy pads the columns by the largest rate (a tile's pixels stay adjacent) but adds a single row of
    zeros: a tap whose row is outside the image reads that row (the row is fixed for a whole tile, so the choice
    costs nothing inside it). Padding the rows by the largest rate too made the copy 2.8x a 7x7 input and 1.9x
    a stride-2 14x14 one, and the small images' kernels slower than with this copy.

    The slots' weights are one tensor, slot inside the input block, so an output block's weights are read in one
    sequential stream, as a plain conv reads its weight: read from one tensor per slot, the large layers' weights
    (cold in a network) ran the kernel measurably slower than the plain conv's."""
    from tvm import te, tirx

    n, c_in, height, width, lanes = (int(v) for v in x.shape)
    c_out, bi = int(weight.shape[0]), int(weight.shape[1])
    in_card, out_card = c_in // groups, c_out // groups
    bo, parts = out_card * bi // in_card, in_card // bi
    pad = max(rates)
    copy = padded(x, 1, pad, 0, pad, name="psconv_pad")  # row 0 the zero row, row h + 1 the image's row h
    r = te.reduce_axis((0, bi), "rc")
    slot = te.reduce_axis((0, len(rates)), SLOT_AXIS)
    kh = te.reduce_axis((0, 3), "kh")
    kw = te.reduce_axis((0, 3), "kw")
    in_lane = te.reduce_axis((0, lanes), "ri")

    def body(b, o, h, w, out_lane):
        card, block = o // out_card, (o % out_card) // bo
        chosen = None
        for j in reversed(range(len(rates))):  # the rule unrolls the slot loop, folding the choice
            d = rates[j]
            c = card * in_card + (block + j) % parts * bi + r
            row = padded_row(h * stride + (kh - 1) * d, height)
            term = copy[b, c, row, w * stride + kw * d + pad - d, in_lane]
            chosen = term if chosen is None else tirx.if_then_else(slot == j, term, chosen)
        return te.sum(chosen * weight[o, r, slot, kh, kw, in_lane, out_lane], axis=[r, slot, kh, kw, in_lane])

    return te.compute(_output_shape(x, stride, c_out), body, name="psconv_fused", attrs={"schedule_rule": RULE})


def padded(data, top: int, left: int, bottom: int, right: int, name: str, scheduled: bool = True,
           lanes: int | None = None):
    """``data`` (NCHW or NCHW{b}c) with zeros around its rows and columns and, blocked, up to ``lanes`` channels
    per block (int8's stem: its 3 channels read as 4, one ``vpdpbusd`` step); itself where nothing is padded.
    ``scheduled``: the copy is left to the register-tiled rules, which copy it whole before the kernel."""
    from tvm import te, tirx

    n, c, height, width, *have = (int(v) for v in data.shape)
    wider = bool(have) and lanes is not None and lanes > have[0]
    if not (top or left or bottom or right or wider):
        return data

    def element(b, ch, h, w, *lane):
        inside = [h >= top, h < height + top, w >= left, w < width + left, *([lane[0] < have[0]] if wider else [])]
        return tirx.if_then_else(tirx.all(*inside), data[(b, ch, h - top, w - left, *lane)],
                                 tirx.const(0, data.dtype))

    shape = (n, c, height + top + bottom, width + left + right, *([lanes] if wider else have))
    return te.compute(shape, element, name=name, attrs={"schedule_rule": "None"} if scheduled else {})


def padded_row(row, height: int):
    """Row ``row`` of the image in a copy with one zero row on top: ``row + 1``, or the zero row (0) where the row
    is outside the image. As min/max arithmetic, not a select: TIR's region analysis takes a select's value as
    the span of its branches, so an int8 kernel's read would not be one element per lane and tensorize would
    refuse it. The row is fixed for a whole tile, so either form is computed once per tile."""
    from tvm import tirx

    above, below = tirx.min(1, tirx.max(0, row + 1)), tirx.min(1, tirx.max(0, height - row))
    return above * below * (row + 1)


def _with_views(x, weights, stride: int, groups: int, rates: list[int]):
    """NCHW, for MetaSchedule's own multi-level tiling: each slot reads its own view, x padded by its rate
    with each card's channels rotated by ``j`` parts, so every index is affine and every rate a constant (a
    select or a table lookup in the index makes TIR's region analysis give the read a variable extent, and
    the rule refuses the block; it also refuses a block that reads one buffer twice)."""
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
        total = None
        for j, d in enumerate(rates):
            term = views[j][b, c, h * stride + kh * d, w * stride + kw * d] * weights[j][o, r, kh, kw]
            total = term if total is None else total + term
        return te.sum(total, axis=[r, kh, kw])

    return te.compute(_output_shape(x, stride, c_out), body, name="psconv_fused")


def block_weight(weight: np.ndarray, in_block: int, out_block: int) -> np.ndarray:
    """``(O, I, kh, kw)`` -> ``OIHW{in_block}i{out_block}o``, the layout ConvertLayout gives conv weights."""
    o, i, kh, kw = weight.shape
    blocked = weight.reshape(o // out_block, out_block, i // in_block, in_block, kh, kw)
    return np.ascontiguousarray(blocked.transpose(0, 2, 4, 5, 3, 1))


def stacked_slot_weights(packed: np.ndarray, groups: int, parts: int, block: int) -> np.ndarray:
    """The one weight tensor the blocked kernel reads: each slot's weight blocked, stacked after the input block."""
    return np.stack([block_weight(w, block, block) for w in slot_weights(packed, groups, parts)], axis=2)


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

        if block:
            weights = [stacked_slot_weights(packed, self.groups, self.parts, block)]
        else:
            weights = slot_weights(packed, self.groups, self.parts)
        return bb.call_te(psconv_compute, data, *(relax.const(w) for w in weights), stride=self.stride,
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
