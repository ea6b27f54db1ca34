"""Winograd F(2x2,3x3) / F(4x4,3x3) for every eligible conv, as a Relax legalization.

Relax never picks Winograd by itself, and TOPI's Winograd needs a dense, stride-1,
dilation-1 3x3 conv in NCHW. A dilation-d conv is d*d independent dilation-1 convs, one per
output phase (y mod d, x mod d), each on the input rows and columns of its phase: so
``winograd_conv`` tiles each phase's outputs and its input transform reads the tile
straight from the input at stride d — no space-to-batch copy (the ``polyphase``
lowering's route). With ``--winograd f2|f4`` every stride-1 3x3 conv padded to keep its
size (the plain ResNet's too: same rules both sides; the dilated PSConv branches of
``grouped``/``sliced``/``aligned``) is legalized to Winograd, whose blocks carry schedule
rules. It reads and writes the layout the conv is built in, NCHW or ``NCHW{b}c`` (``layout.py``):
only the tile read and the output write know the layout, so a blocked network keeps its
blocks through a Winograd conv. Grouped convs are one kernel: each output channel's batched
GEMM sums its own group's input channels.
The weight transform is its own call on the constant weight, so FoldConstant
computes it once at build time.

The input transform is scheduled by psdeploy's rule (``data_pack_rule``), not TVM's: TVM's
samples where the input tile is computed, and its mutator can move that to a place the rest of
the trace no longer applies to, which ends the whole tuning run ("The block no longer exists in
the IRModule"; seen on every batch-8 64@56 conv).
"""

from __future__ import annotations

import re

DATA_PACK_RULE = "psdeploy_winograd_data_pack"


def eligible(call) -> bool:
    """Dense-per-group 3x3, stride 1, padding = dilation (same size out), static, constant weight, in
    NCHW/OIHW or in one channel block throughout (``NCHW{b}c``/``OIHW{b}i{b}o``, the same layout out)."""
    from tvm.ir.expr import Constant

    a = call.attrs
    weight = call.args[1]
    block = re.fullmatch(r"NCHW(\d+)c", a.data_layout)
    same_block = block and a.kernel_layout == f"OIHW{block[1]}i{block[1]}o"
    if not isinstance(weight, Constant) or (a.out_layout or a.data_layout) != a.data_layout:
        return False
    if (a.data_layout, a.kernel_layout) != ("NCHW", "OIHW") and not same_block:
        return False
    shape = list(weight.value.shape)
    dilation = {int(v) for v in a.dilation}
    return (shape[2:4] == [3, 3] and [int(v) for v in a.strides] == [1, 1] and len(dilation) == 1
            and [int(v) for v in a.padding] == [*dilation] * 4)


def _transformed_weight(kernel, tile: int):
    """G k G^T per kernel, laid out (alpha, alpha, C_in per group, C_out) as the batched GEMM reads it.

    (``topi.nn.conv2d_winograd_weight_transform`` is the same sum, but in 0.27 it passes the tensor's
    PrimType dtype to a memoized helper that accepts only strings, and it returns (.., C_out, C_in).)
    """
    from tvm import te
    from tvm.topi.nn.winograd_util import winograd_transform_matrices

    c_out, c_in, k, _ = (int(v) for v in kernel.shape)
    alpha = tile + k - 1
    _, _, G = winograd_transform_matrices(tile, k, "float32")
    kh = te.reduce_axis((0, k), "r_kh")
    kw = te.reduce_axis((0, k), "r_kw")
    return te.compute((alpha, alpha, c_in, c_out), lambda e, n, ci, co: te.sum(
        kernel[co, ci, kh, kw] * G[e, kh] * G[n, kw], axis=[kh, kw]), name="winograd_weight")


def winograd_conv(data, kernel_pack, tile: int, dilation: int, groups: int = 1,
                  data_pack_rule: str = DATA_PACK_RULE):
    """Winograd F(tile x tile, 3x3) of a 3x3 conv at ``dilation`` (padding = dilation) on NCHW or
    ``NCHW{b}c`` data (5-D), the output in the same layout.

    Output tiles lie on the dilation's phase lattice: tile (phase py, px; row ty, column tx)
    holds outputs y = py + d*(ty*m + i), x = px + d*(tx*m + j), which read the padded input at
    rows py + d*(ty*m + eps) (eps < alpha), so the input transform gathers every tile at
    stride d from the input itself (d = 1: the usual tiling). The stages (and their names) are
    TOPI's; the inverse carries TVM's schedule rule, the input transform ``data_pack_rule``."""
    from tvm import te, topi
    from tvm.topi.nn.winograd_util import winograd_transform_matrices

    d, m = dilation, tile
    block = int(data.shape[4]) if len(data.shape) == 5 else 0
    n_batch, _, height, width = (int(v) for v in data.shape[:4])
    alpha, _, c_in_group, c_out = (int(v) for v in kernel_pack.shape)
    c_in, c_out_group = c_in_group * groups, c_out // groups
    A, B, _ = winograd_transform_matrices(m, 3, "float32")
    rows, cols = -(-height // d), -(-width // d)  # outputs per phase, at most
    n_h, n_w = -(-rows // m), -(-cols // m)
    reach_h, reach_w = d * (n_h * m + 2), d * (n_w * m + 2)  # padded size the last tiles read up to
    lanes = [0] if block else []
    data_pad = topi.nn.pad(data, [0, 0, d, d, *lanes], [0, 0, reach_h - height - d, reach_w - width - d, *lanes],
                           name="data_pad")
    per_image = d * d * n_h * n_w
    tiles = n_batch * per_image

    def origin(p):  # (image, phase row, phase column, tile row, tile column) of tile p
        return (p // per_image, p % per_image // (d * n_h * n_w), p % (d * n_h * n_w) // (n_h * n_w),
                p % (n_h * n_w) // n_w, p % n_w)

    def tile_element(ci, p, eps, nu):
        n, py, px, ty, tx = origin(p)
        y, x = py + d * (ty * m + eps), px + d * (tx * m + nu)
        return data_pad[n, ci // block, y, x, ci % block] if block else data_pad[n, ci, y, x]

    input_tile = te.compute((c_in, tiles, alpha, alpha), tile_element, name="input_tile",
                            attrs={"schedule_rule": "None"})
    r_a, r_b = te.reduce_axis((0, alpha), "r_a"), te.reduce_axis((0, alpha), "r_b")
    data_pack = te.compute(
        (alpha, alpha, c_in, tiles),
        lambda eps, nu, ci, p: te.sum(input_tile[ci, p, r_a, r_b] * B[r_a, eps] * B[r_b, nu], axis=[r_a, r_b]),
        name="data_pack", attrs={"schedule_rule": data_pack_rule})
    ci = te.reduce_axis((0, c_in_group), name="ci")

    def in_channel(co):  # the group's input channels: the dense conv's are all of them
        return ci if groups == 1 else co // c_out_group * c_in_group + ci

    bgemm = te.compute(
        (alpha, alpha, c_out, tiles),
        lambda eps, nu, co, p: te.sum(data_pack[eps, nu, in_channel(co), p] * kernel_pack[eps, nu, ci, co],
                                      axis=[ci]),
        name="bgemm", attrs={"layout_free_placeholders": [kernel_pack]})
    r_a, r_b = te.reduce_axis((0, alpha), "r_a"), te.reduce_axis((0, alpha), "r_b")
    inverse = te.compute(
        (c_out, tiles, m, m),
        lambda co, p, vh, vw: te.sum(bgemm[r_a, r_b, co, p] * A[r_a, vh] * A[r_b, vw], axis=[r_a, r_b]),
        name="inverse", attrs={"schedule_rule": "conv2d_nchw_winograd_inverse"})

    def output(n, co, y, x):
        row, col = y // d, x // d
        p = n * per_image + (y % d) * (d * n_h * n_w) + (x % d) * (n_h * n_w) + (row // m) * n_w + col // m
        return inverse[co, p, row % m, col % m]

    if block:
        return te.compute((n_batch, c_out // block, height, width, block),
                          lambda n, cb, y, x, lane: output(n, cb * block + lane, y, x), name="conv2d_winograd")
    return te.compute((n_batch, c_out, height, width), output, name="conv2d_winograd")


def data_pack_rule(sch, data_pack):
    """The input transform's schedule: tiles of input channels x tiles, the 4x4 (6x6) transform unrolled,
    each tile's input read where it is transformed and the padding folded into that read. TVM's own rule
    with the input tile's place fixed (see the module's docstring); MetaSchedule still tunes the tiles."""
    input_tile = _producer_inlining_constants(sch, data_pack)
    data_pad = _producer_inlining_constants(sch, input_tile)
    eps, nu, ci, p, r_a, r_b = sch.get_loops(data_pack)
    ci_outer, ci_inner = sch.split(ci, sch.sample_perfect_tile(ci, n=2, max_innermost_factor=64))
    p_outer, p_inner = sch.split(p, sch.sample_perfect_tile(p, n=2, max_innermost_factor=64))
    for loop in (eps, nu, r_a, r_b):
        sch.unroll(loop)
    sch.reorder(ci_outer, p_outer, ci_inner, p_inner, eps, nu, r_a, r_b)
    sch.compute_at(input_tile, p_inner, preserve_unit_loops=True)
    sch.compute_inline(data_pad)
    return [sch]


def _producer_inlining_constants(sch, block):
    """``block``'s one non-constant producer, after inlining the constant ones (the transform matrices)."""
    producers = []
    for producer in sch.get_producers(block):
        if sch.get(producer).reads:
            producers.append(producer)
        else:
            sch.compute_inline(producer)
    (producer,) = producers
    return producer


def legalize_one(bb, call, tile: int, data_pack: str = DATA_PACK_RULE):
    """One eligible ``relax.nn.conv2d`` (NCHW or blocked) as a Winograd kernel on its transformed weight."""
    from tvm import relax

    from psdeploy.backends.tvm.fused import unblock_weight

    data, weight = call.args
    groups, dilation = int(call.attrs.groups), int(call.attrs.dilation[0])
    kernels = weight.value.numpy()
    kernels = unblock_weight(kernels) if kernels.ndim == 6 else kernels
    kernel_pack = bb.emit_te(_transformed_weight, relax.const(kernels), tile, primfunc_name_hint="winograd_weight")
    name = f"conv2d_winograd_f{tile}" + (f"_d{dilation}" if dilation > 1 else "")
    return bb.emit_te(winograd_conv, data, kernel_pack, tile, dilation, groups, data_pack,
                      primfunc_name_hint=name)


def winograd_legalize(tile: int, device: str = "cpu"):
    """A ``relax.nn.conv2d`` legalization in NCHW: Winograd where eligible, TOPI's default elsewhere (on CUDA
    the input transform keeps TVM's GPU rule; psdeploy's is for CPUs)."""
    import tvm

    default = tvm.ir.Op.get("relax.nn.conv2d").get_attr("FLegalize")
    data_pack = DATA_PACK_RULE if device == "cpu" else "conv2d_nchw_winograd_data_pack"

    def legalize(bb, call):
        return legalize_one(bb, call, tile, data_pack) if eligible(call) else default(bb, call)

    return legalize


def register_data_pack_rule(target_key: str) -> None:
    """Make the input transform's rule known to MetaSchedule (idempotent)."""
    import tvm

    tvm.register_global_func(f"s_tir.meta_schedule.{target_key}.{DATA_PACK_RULE}", data_pack_rule, override=True)
