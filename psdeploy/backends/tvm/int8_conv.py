"""Blocked integer convs for int8 builds: uint8 data x int8 weights, accumulated in int32.

The layout pass blocks an integer conv like any conv (``NCHW{16}c`` data, ``OIHW{16}i{16}o``
weight); this legalization emits a compute whose reduction ends in the 4 input channels that
one VNNI ``vpdpbusd`` sums per int32 lane (``dot_16x4_vnni``): the weight is repacked at build
time to ``OIHW{4}i{16}o{4}i``, so for each group of 4 input channels one 64-byte vector holds
the 16 output lanes x 4 channels, and the data's 4 channels are one broadcast 32-bit word.
psdeploy's int8 rule (``int8_tiling.py``) tiles and tensorizes it. A PSConv placeholder
(``fused.py``) gets the PSConv kernel in the same form: one copy of the input, its columns padded by the
largest rate and one zero row above it (which every tap outside the image reads), each slot reading it at
its rate's offset in the input block it rotates to, the slots one more reduction axis (their weights
stacked), so each step is still one ``vpdpbusd``.
The stem's 3-channel input block is read as 4 (a zero channel, a zero weight).
Unblocked PSConv layers get the same sum over NCHW; other integer convs keep TOPI's.
Padding is 0: the zero point's share at the borders is subtracted after (``qdq.py``).
"""

from __future__ import annotations

import numpy as np

from psdeploy.backends.tvm.fused import (SLOT_AXIS, padded, padded_row, placeholder_layer, slot_weights,
                                         stacked_slot_weights, unblock_weight)

INT8_RULE = "psdeploy_int8_tiled"
PAD = "pad_int8"  # the padded copy's block (the int8 rule's producer; a test finds the kernel's blocks by name)
VNNI_CHANNELS = 4  # input channels summed per int32 lane by one vpdpbusd
VNNI_LANES = 16  # int32 accumulators per 512-bit vector


def vnni_weight(blocked: np.ndarray) -> np.ndarray:
    """``...{ib}i{ob}o`` -> ``...{ib/4}i{ob}o{4}i`` (``OIHW`` or PSConv's stacked slots before the two block axes):
    each 4 input channels of an output lane adjacent."""
    *outer, ib, ob = blocked.shape
    packed = blocked.reshape(*outer, ib // VNNI_CHANNELS, VNNI_CHANNELS, ob)
    return np.ascontiguousarray(packed.swapaxes(-1, -2))


def _rate(slot, rates: list[int]):
    """The rate of slot ``slot`` (a loop variable) as index arithmetic: ``sum_j rates[j] * [slot == j]``, the
    indicator as ``1 - min(1, |slot - j|)``. Not a select: TIR's region analysis takes a select's value as the
    span of its branches even where the slot is known, so the data read would not be one element per lane
    and tensorize would refuse it; min/max keep a point a point. Once the slot loop is unrolled it folds."""
    from tvm import tirx

    value = None
    for j, rate in enumerate(rates):
        apart = tirx.max(slot - j, j - slot)
        term = (1 - tirx.min(1, apart)) * rate
        value = term if value is None else value + term
    return value


def _widened(a, b):
    return a.astype("int32") * b.astype("int32")


def conv2d_nchwc_int8(data, weight, strides: tuple[int, int], padding: tuple[int, int, int, int],
                      dilation: tuple[int, int]):
    """TE: ``NCHW{ib}c`` uint8 x ``OIHW{ib/4}i{ob}o{4}i`` int8 -> ``NCHW{ob}c`` int32 (groups 1)."""
    from tvm import te

    n, _, height, width, _ = (int(v) for v in data.shape)
    oc, ic, kh, kw, ib4, ob, four = (int(v) for v in weight.shape)
    (sh, sw), (dh, dw) = strides, dilation
    top, left, bottom, right = padding
    copy = padded(data, top, left, bottom, right, name=PAD, lanes=ib4 * four)
    out_h = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    c = te.reduce_axis((0, ic), "ic")
    y = te.reduce_axis((0, kh), "kh")
    x = te.reduce_axis((0, kw), "kw")
    q = te.reduce_axis((0, ib4), "ic4")
    i = te.reduce_axis((0, four), "ici")

    def body(b, o, h, w, lane):
        return te.sum(_widened(copy[b, c, h * sh + y * dh, w * sw + x * dw, q * four + i],
                               weight[o, c, y, x, q, lane, i]), axis=[c, y, x, q, i])

    return te.compute((n, oc, out_h, out_w, ob), body, name="conv2d_NCHWc_int8", attrs={"schedule_rule": INT8_RULE})


def psconv_int8(data, weight, stride: int, groups: int, rates: list[int]):
    """TE: one PSConv layer, ``NCHW{b}c`` uint8 with the slots' weights stacked as ``(OCb, bi, slot, 3, 3, b/4, b,
    4)`` int8 -> ``NCHW{b}c`` int32; or NCHW uint8 with ``(slot, C_out, bi, 3, 3)`` -> NCHW int32.

    Output block ``ob`` of a card reads, in slot ``j``, its card's input part ``(part(ob) + j) % parts`` at
    ``rates[j]``: the sum of :func:`psdeploy.backends.tvm.integer_reference.psconv_int`."""
    from tvm import te

    n, c_in, height, width, *lanes = (int(v) for v in data.shape)
    blocked = bool(lanes)
    c_out = int(weight.shape[0]) if blocked else int(weight.shape[1])
    bi = int(weight.shape[1]) if blocked else int(weight.shape[2])  # input channels (blocks) per part
    in_card, out_card = c_in // groups, c_out // groups
    parts = in_card // bi
    bo = out_card // parts
    pad = max(rates)
    copy = padded(data, 1, pad, 0, pad, name=PAD, scheduled=blocked)  # row 0 the zero row, as fused.py's copy
    r = te.reduce_axis((0, bi), "rc")
    slot = te.reduce_axis((0, len(rates)), SLOT_AXIS)
    y = te.reduce_axis((0, 3), "kh")
    x = te.reduce_axis((0, 3), "kw")
    extra = [te.reduce_axis((0, int(weight.shape[5])), "ic4"), te.reduce_axis((0, VNNI_CHANNELS), "ici")] \
        if blocked else []

    def body(b, o, h, w, *lane):
        d = _rate(slot, rates)
        c = (o // out_card) * in_card + ((o % out_card) // bo + slot) % parts * bi + r
        row, col = padded_row(h * stride + (y - 1) * d, height), w * stride + (x - 1) * d + pad
        if blocked:
            q, i = extra
            value = _widened(copy[b, c, row, col, q * VNNI_CHANNELS + i], weight[o, r, slot, y, x, q, lane[0], i])
        else:
            value = _widened(copy[b, c, row, col], weight[slot, o, r, y, x])
        return te.sum(value, axis=[r, slot, y, x, *extra])

    shape = (n, c_out, (height - 1) // stride + 1, (width - 1) // stride + 1, *lanes)
    return te.compute(shape, body, name="psconv_int8", attrs={"schedule_rule": INT8_RULE} if blocked else {})


def psconv_weights(packed: np.ndarray, groups: int, parts: int, block: int) -> np.ndarray:
    """The stacked slot weights :func:`psconv_int8` reads, from the layer's packed OIHW int8 weight."""
    if not block:
        return np.stack(slot_weights(packed, groups, parts))
    return vnni_weight(stacked_slot_weights(packed, groups, parts, block))


def vnni_ready(call) -> bool:
    """Whether a blocked integer conv takes the VNNI compute: blocks of 16 output lanes, one group, input blocks
    in fours or a single input block (the stem's 3 channels, read as 4: :func:`in_fours`); TOPI's
    ``conv2d_NCHWc`` computes the others."""
    weight_shape = [int(v) for v in call.args[1].ty.shape]
    return (len(weight_shape) == 6 and weight_shape[5] == VNNI_LANES and int(call.attrs.groups) == 1
            and (weight_shape[4] % VNNI_CHANNELS == 0 or weight_shape[1] == 1))


def in_fours(blocked: np.ndarray) -> np.ndarray:
    """An ``OIHW{ib}i{ob}o`` weight with zero input channels added up to a multiple of 4 per block: whatever
    the data's added channel holds (the kernel pads it with 0), it adds nothing."""
    extra = -blocked.shape[4] % VNNI_CHANNELS
    return np.pad(blocked, [(0, 0)] * 4 + [(0, extra), (0, 0)]) if extra else blocked


def legalize_integer_conv(bb, call):
    """A ``relax.nn.conv2d`` of uint8 data and a constant int8 weight (``qdq.py``) -> its integer kernel."""
    from tvm import relax, topi
    from tvm.relax.transform.legalize_ops.nn import _nn_conv2d

    a = call.attrs
    weight = call.args[1].value.numpy()
    blocked = weight.ndim == 6
    packed = unblock_weight(weight) if blocked else weight
    layer = placeholder_layer(packed)
    block = weight.shape[5] if blocked else 0
    if layer is not None:
        stacked = psconv_weights(packed, layer.groups, layer.parts, block)
        return bb.call_te(psconv_int8, call.args[0], relax.const(stacked), stride=layer.stride, groups=layer.groups,
                          rates=list(layer.rates), primfunc_name_hint="psconv_int8")
    pad = [int(v) for v in a.padding]
    if blocked and vnni_ready(call):
        return bb.call_te(conv2d_nchwc_int8, call.args[0], relax.const(vnni_weight(in_fours(weight))),
                          strides=tuple(int(v) for v in a.strides), padding=tuple(pad),
                          dilation=tuple(int(v) for v in a.dilation), primfunc_name_hint="conv2d_NCHWc_int8")
    if blocked:
        return bb.call_te(topi.nn.conv2d_NCHWc, call.args[0], call.args[1], [int(v) for v in a.strides], pad,
                          [int(v) for v in a.dilation], a.data_layout, a.out_layout, "int32",
                          primfunc_name_hint="conv2d_NCHWc")
    return _nn_conv2d(bb, call)
