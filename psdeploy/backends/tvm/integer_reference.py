"""Integer convs in numpy, exact in int64: what TVM's int8 kernels must equal, bit for bit.

Two users: the tests (each int8 kernel, scheduled and tensorized, against these sums) and the
QDQ pass (``qdq.py``), which needs a conv of an all-ones input to correct a nonzero zero point
at the borders (a conv pads with 0, where the quantized zero is ``zp``).
"""

from __future__ import annotations

import numpy as np


def conv_int(x: np.ndarray, w: np.ndarray, stride: int | tuple[int, int] = 1,
             padding: tuple[int, int, int, int] = (0, 0, 0, 0), dilation: int | tuple[int, int] = 1,
             groups: int = 1) -> np.ndarray:
    """NCHW x OIHW -> NCHW, zero padding (top, left, bottom, right), summed in int64."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    top, left, bottom, right = padding
    n, c_in, height, width = x.shape
    c_out, c_group, kh, kw = w.shape
    xp = np.zeros((n, c_in, height + top + bottom, width + left + right), np.int64)
    xp[:, :, top:top + height, left:left + width] = x
    oh = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, c_out, oh, ow), np.int64)
    o_group = c_out // groups
    for g in range(groups):
        wg = w[g * o_group:(g + 1) * o_group].astype(np.int64)
        xg = xp[:, g * c_group:(g + 1) * c_group]
        for i in range(kh):
            for j in range(kw):
                window = xg[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
                out[:, g * o_group:(g + 1) * o_group] += np.einsum("nchw,oc->nohw", window, wg[:, :, i, j])
    return out


def psconv_int(x: np.ndarray, packed: np.ndarray, stride: int, groups: int, parts: int,
               rates: list[int]) -> np.ndarray:
    """A PSConv layer over its packed ``(C_out, C_in/groups, 3, 3)`` weight, ``rates`` per slot (output block
    ob reads input block (ob + j) % parts at rates[j]): one masked conv per rate, each padded by its rate."""
    c_out, c_in_card = packed.shape[:2]
    bo, bi = c_out // (groups * parts), c_in_card // parts
    out_part = (np.arange(c_out) % (c_out // groups)) // bo
    in_part = np.arange(c_in_card) // bi
    slot = (in_part[None, :] - out_part[:, None]) % parts
    rate_of = np.asarray(rates)[slot]  # (C_out, C_in/groups): the rate each kernel is applied at
    total = None
    for d in sorted(set(rates)):
        masked = np.where((rate_of == d)[:, :, None, None], packed, 0)
        y = conv_int(x, masked, stride, (d, d, d, d), d, groups)
        total = y if total is None else total + y
    return total
