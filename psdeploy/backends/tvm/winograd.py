"""Winograd F(2x2,3x3) / F(4x4,3x3) for every eligible conv, as a Relax legalization.

Relax never picks Winograd by itself, and TOPI's Winograd needs a
dense, stride-1, dilation-1 3x3 conv. The polyphase lowering turns every dilated
PSConv branch into exactly that, so with ``--winograd f2|f4`` every such conv (the
plain ResNet's stride-1 3x3 convs too: same rules both sides) is legalized to
TOPI's Winograd compute, whose blocks carry MetaSchedule's winograd schedule rules.
The weight transform is its own call on the constant weight, so FoldConstant
computes it once at build time. Grouped convs run one Winograd per group.
"""

from __future__ import annotations


def eligible(call) -> bool:
    """Dense-per-group 3x3, stride 1, dilation 1, NCHW/OIHW, static shapes, constant weight."""
    from tvm.ir.expr import Constant

    a = call.attrs
    weight = call.args[1]
    if not isinstance(weight, Constant) or a.data_layout != "NCHW" or a.kernel_layout != "OIHW":
        return False
    if a.out_layout not in ("", "NCHW"):
        return False
    shape = list(weight.value.shape)
    return (shape[2:] == [3, 3] and [int(v) for v in a.strides] == [1, 1]
            and [int(v) for v in a.dilation] == [1, 1] and [int(v) for v in a.padding] == [1, 1, 1, 1])


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


def winograd_legalize(tile: int):
    """A ``relax.nn.conv2d`` legalization: Winograd where eligible, TOPI's default elsewhere."""
    import tvm
    from tvm import relax, topi

    default = tvm.ir.Op.get("relax.nn.conv2d").get_attr("FLegalize")

    def legalize(bb, call):
        if not eligible(call):
            return default(bb, call)
        data, weight = call.args
        groups = int(call.attrs.groups)
        kernels = weight.value.numpy()
        c_in, c_out = int(data.ty.shape[1]) // groups, kernels.shape[0] // groups
        outs = []
        for g in range(groups):
            x = data if groups == 1 else bb.emit_te(
                topi.strided_slice, data, [g * c_in], [(g + 1) * c_in], [1], axes=[1],
                primfunc_name_hint="group_slice")
            w = relax.const(kernels[g * c_out:(g + 1) * c_out])
            kernel_pack = bb.emit_te(_transformed_weight, w, tile, primfunc_name_hint="winograd_weight")
            outs.append(bb.emit_te(_winograd, x, kernel_pack, tile, primfunc_name_hint=f"conv2d_winograd_f{tile}"))
        return outs[0] if groups == 1 else bb.call_te(topi.concatenate, outs, axis=1,
                                                     primfunc_name_hint="group_concat")

    return legalize
