"""Winograd F(2x2,3x3) / F(4x4,3x3) for every eligible conv, as a Relax legalization.

Relax never picks Winograd by itself, and TOPI's Winograd needs a dense, stride-1,
dilation-1 3x3 conv. A dilation-d conv is d*d independent dilation-1 convs, one per
output phase (y mod d, x mod d), each on the input rows and columns of its phase: so
``dilated_winograd`` tiles each phase's outputs and its input transform reads the tile
straight from the input at stride d — no space-to-batch copy (the ``polyphase``
lowering's route). With ``--winograd f2|f4`` every stride-1 3x3 conv padded to keep its
size (the plain ResNet's too: same rules both sides; the dilated PSConv branches of
``grouped``/``sliced``/``aligned``) is legalized to Winograd, whose blocks carry
MetaSchedule's winograd schedule rules.
The weight transform is its own call on the constant weight, so FoldConstant
computes it once at build time. Grouped convs run one Winograd per group.
"""

from __future__ import annotations


def eligible(call) -> bool:
    """Dense-per-group 3x3, stride 1, padding = dilation (same size out), NCHW/OIHW, static, constant weight."""
    from tvm.ir.expr import Constant

    a = call.attrs
    weight = call.args[1]
    if not isinstance(weight, Constant) or a.data_layout != "NCHW" or a.kernel_layout != "OIHW":
        return False
    if a.out_layout not in ("", "NCHW"):
        return False
    shape = list(weight.value.shape)
    dilation = {int(v) for v in a.dilation}
    return (shape[2:] == [3, 3] and [int(v) for v in a.strides] == [1, 1] and len(dilation) == 1
            and [int(v) for v in a.padding] == [*dilation] * 4)


def _transformed_weight(kernel, tile: int):
    """G k G^T per kernel, laid out (alpha, alpha, C_in, C_out) as TOPI's pre-computed Winograd reads it.

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


def _winograd(data, kernel_pack, tile: int):
    from tvm.topi.nn.conv2d import _conv2d_winograd_nchw_impl

    # the implementation both public TOPI entry points call; it alone takes the tile size
    return _conv2d_winograd_nchw_impl(data, kernel_pack, 1, 1, 1, "float32", tile, pre_computed=True)


def dilated_winograd(data, kernel_pack, tile: int, dilation: int):
    """Winograd F(tile x tile, 3x3) of a 3x3 conv at ``dilation`` (padding = dilation), NCHW.

    Output tiles lie on the dilation's phase lattice: tile (phase py, px; row ty, column tx)
    holds outputs y = py + d*(ty*m + i), x = px + d*(tx*m + j), which read the padded input at
    rows py + d*(ty*m + eps) (eps < alpha), so the input transform gathers every tile at
    stride d from the input itself. The stages (and their names and schedule-rule attributes)
    are TOPI's, so MetaSchedule schedules them alike."""
    from tvm import te, topi
    from tvm.topi.nn.winograd_util import winograd_transform_matrices

    d, m = dilation, tile
    n_batch, c_in, height, width = (int(v) for v in data.shape)
    alpha, _, _, c_out = (int(v) for v in kernel_pack.shape)
    A, B, _ = winograd_transform_matrices(m, 3, "float32")
    rows, cols = -(-height // d), -(-width // d)  # outputs per phase, at most
    n_h, n_w = -(-rows // m), -(-cols // m)
    reach_h, reach_w = d * (n_h * m + 2), d * (n_w * m + 2)  # padded size the last tiles read up to
    data_pad = topi.nn.pad(data, (0, 0, d, d), (0, 0, reach_h - height - d, reach_w - width - d), name="data_pad")
    per_image = d * d * n_h * n_w
    tiles = n_batch * per_image

    def origin(p):  # (image, phase row, phase column, tile row, tile column) of tile p
        return (p // per_image, p % per_image // (d * n_h * n_w), p % (d * n_h * n_w) // (n_h * n_w),
                p % (n_h * n_w) // n_w, p % n_w)

    def tile_element(ci, p, eps, nu):
        n, py, px, ty, tx = origin(p)
        return data_pad[n, ci, py + d * (ty * m + eps), px + d * (tx * m + nu)]

    input_tile = te.compute((c_in, tiles, alpha, alpha), tile_element, name="input_tile",
                            attrs={"schedule_rule": "None"})
    r_a, r_b = te.reduce_axis((0, alpha), "r_a"), te.reduce_axis((0, alpha), "r_b")
    data_pack = te.compute(
        (alpha, alpha, c_in, tiles),
        lambda eps, nu, ci, p: te.sum(input_tile[ci, p, r_a, r_b] * B[r_a, eps] * B[r_b, nu], axis=[r_a, r_b]),
        name="data_pack", attrs={"schedule_rule": "conv2d_nchw_winograd_data_pack"})
    ci = te.reduce_axis((0, c_in), name="ci")
    bgemm = te.compute(
        (alpha, alpha, c_out, tiles),
        lambda eps, nu, co, p: te.sum(data_pack[eps, nu, ci, p] * kernel_pack[eps, nu, ci, co], axis=[ci]),
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

    return te.compute((n_batch, c_out, height, width), output, name="conv2d_winograd")


def winograd_legalize(tile: int):
    """A ``relax.nn.conv2d`` legalization: Winograd where eligible, TOPI's default elsewhere."""
    import tvm
    from tvm import relax, topi

    default = tvm.ir.Op.get("relax.nn.conv2d").get_attr("FLegalize")

    def legalize(bb, call):
        if not eligible(call):
            return default(bb, call)
        data, weight = call.args
        groups, dilation = int(call.attrs.groups), int(call.attrs.dilation[0])
        kernels = weight.value.numpy()
        c_in, c_out = int(data.ty.shape[1]) // groups, kernels.shape[0] // groups
        outs = []
        for g in range(groups):
            x = data if groups == 1 else bb.emit_te(
                topi.strided_slice, data, [g * c_in], [(g + 1) * c_in], [1], axes=[1],
                primfunc_name_hint="group_slice")
            w = relax.const(kernels[g * c_out:(g + 1) * c_out])
            kernel_pack = bb.emit_te(_transformed_weight, w, tile, primfunc_name_hint="winograd_weight")
            if dilation == 1:
                outs.append(bb.emit_te(_winograd, x, kernel_pack, tile, primfunc_name_hint=f"conv2d_winograd_f{tile}"))
            else:
                outs.append(bb.emit_te(dilated_winograd, x, kernel_pack, tile, dilation,
                                       primfunc_name_hint=f"conv2d_winograd_f{tile}_d{dilation}"))
        return outs[0] if groups == 1 else bb.call_te(topi.concatenate, outs, axis=1,
                                                     primfunc_name_hint="group_concat")

    return legalize
