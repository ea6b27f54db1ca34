"""A MetaSchedule rule for the blocked PSConv kernel: the register-tiled direct-conv structure.

MetaSchedule's x86 space (multi-level tiling "SSRSRS") stalls on the fused PSConv kernel of
``fused.py``: in NCHW{b}c it sums four slot views per reduction step, and the tuned kernels ran at
about half the GFLOP/s of the plain 3x3 convs they replace. The structure oneDNN and NeoCPU use for
direct convs fits it: a tile of ``ow_tile`` output pixels x ``oc_tile`` output blocks is held in
vector registers (one register per pixel and block) across the whole reduction; each step loads one
weight vector per block and broadcasts one input value per pixel into it. Here the reduction runs
input block, kh, kw, lane, with every slot's multiply-add in the step, and the tile is written out
once, with the kernel's bias and relu applied on the way.

The kernel's block asks for this rule by name (its ``schedule_rule`` annotation); MetaSchedule's
``ApplyCustomRule`` calls it in place of its default rules, and the two tile sizes are sampled, so
the search still tunes them (its tile-size mutator moves them) and the trace replays from a database.
"""

from __future__ import annotations

RULE = "psdeploy_register_tiled"
TARGET_KEY = "cpu"  # llvm targets' key: the rule is looked up as s_tir.meta_schedule.cpu.<RULE>
MARK = "psdeploy.register_tiled"  # on the loops this rule made parallel or vector
VECTOR_REGISTERS = {16: 32, 8: 16}  # fp32 lanes of a block -> vector registers (AVX-512, AVX2); else SSE's 16


def register_tiled(sch, block):
    """Schedule one blocked conv block (``b, o, h, w, lane`` spatial, then its reductions): the design space
    of register tiles, as one schedule with sampled tile sizes."""
    b, oc, oh, ow, lane, *reductions = sch.get_loops(block)
    lanes = int(sch.get(lane).extent)
    registers = VECTOR_REGISTERS.get(lanes, 16)
    in_block, in_lane, kh, kw = _reduction_order(sch, reductions, lanes)
    ow_outer, ow_tile = sch.split(ow, sch.sample_perfect_tile(ow, n=2, max_innermost_factor=registers - 4))
    oc_outer, oc_tile = sch.split(oc, sch.sample_perfect_tile(oc, n=2, max_innermost_factor=4 if lanes >= 16 else 2))
    sch.reorder(b, oc_outer, oh, ow_outer, in_block, kh, kw, in_lane, oc_tile, ow_tile, lane)
    written = sch.cache_write(block, 0, "local")
    _inline_epilogue(sch, written)
    sch.reverse_compute_at(written, ow_outer, preserve_unit_loops=True)  # same loops whatever the tiles
    rows = sch.fuse(b, oc_outer, oh)
    sch.parallel(rows)
    sch.vectorize(lane)
    sch.unroll(ow_tile)
    sch.unroll(oc_tile)
    written_lane = sch.get_loops(written)[-1]
    sch.vectorize(written_lane)
    for loop in (rows, lane, written_lane):  # MetaSchedule's parallel/vectorize postproc passes marked loops by
        sch.annotate(loop, MARK, 1)
    return [sch]  # the reduction's init is split off by MetaSchedule's postproc, at the input-block loop


def _reduction_order(sch, reductions, lanes: int):
    """``(input block, input lane, kh, kw)`` loops: the PSConv kernel's own (r, lane, kh, kw), or TOPI
    ``conv2d_NCHWc``'s (ic, kh, kw) with ic split into blocks."""
    if len(reductions) == 4:
        return reductions
    ic, kh, kw = reductions
    in_block, in_lane = sch.split(ic, [None, lanes])
    return in_block, in_lane, kh, kw


def _inline_epilogue(sch, written) -> None:
    """Fold the elementwise ops that read the conv's output (bias add, relu) into the write-out of the tile."""
    from tvm.s_tir.schedule import ScheduleError

    while len(consumers := sch.get_consumers(written)) == 1:
        try:
            sch.reverse_compute_inline(consumers[0])
        except ScheduleError:
            return


def register_schedule_rules() -> None:
    """Make the rule known to MetaSchedule (idempotent): the tuning process's space generator calls it."""
    import tvm

    tvm.register_global_func(f"s_tir.meta_schedule.{TARGET_KEY}.{RULE}", register_tiled, override=True)
