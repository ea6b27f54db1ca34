"""What each compiled kernel computes: the conv it holds, as the manifest records it.

TVM's VM profile names kernels by symbol (``fused_conv2d_NCHWc3_add2_relu1``), which says neither
which conv it is nor how fast it runs. Read from the module before its schedules are applied, each
kernel's reduction block gives its output (channels, height, width) and the length of its
reduction per output (C_in/groups x kh x kw; for a PSConv kernel, over all its slots), so a
profile can give GFLOP/s per kernel and set each conv beside the same conv on another runtime.
"""

from __future__ import annotations

from psdeploy.backends.artifact import KernelWork
from psdeploy.backends.tvm.fused import SLOT_AXIS

SPATIAL, REDUCE = 0, 2  # IterVar types


def _reduction_block(func):
    """The first reduction block of a PrimFunc (a fused kernel holds one: its conv or matmul)."""
    from tvm import s_tir
    from tvm.s_tir.stmt import SBlockRealize

    if not isinstance(func.body, SBlockRealize):  # no root block: not written as blocks (TE writes them)
        return None
    sch = s_tir.Schedule(func)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        stmt = sch.get(block)
        if any(int(iv.iter_type) == REDUCE for iv in stmt.iter_vars):
            return stmt
    return None


def kernel_work(mod) -> dict[str, KernelWork]:
    """Symbol -> work of every kernel whose output is an NCHW or ``NCHW{b}c`` reduction (convs, PSConv)."""
    from tvm import tirx

    work = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        block = _reduction_block(func)
        if block is None or "conv" not in block.name_hint:  # a mean or the classifier's matmul
            continue
        spatial = [int(iv.dom.extent) for iv in block.iter_vars if int(iv.iter_type) == SPATIAL]
        reduction = 1
        for iv in block.iter_vars:
            if int(iv.iter_type) == REDUCE:
                reduction *= int(iv.dom.extent)
        if len(spatial) == 5:  # NCHW{b}c
            spatial = [spatial[0], spatial[1] * spatial[4], spatial[2], spatial[3]]
        if len(spatial) != 4:
            continue
        if block.name_hint == "psconv_fused" and SLOT_AXIS not in {iv.var.name.removeprefix("v_")
                                                                    for iv in block.iter_vars}:
            reduction *= len(block.reads) // 2  # NCHW: one view and one weight read per slot, each summed whole
        work[gv.name_hint] = KernelWork(op=block.name_hint, batch=spatial[0], out_channels=spatial[1],
                                        out_height=spatial[2], out_width=spatial[3], reduction=reduction)
    return work
