"""A MetaSchedule rule for blocked convs: the register-tiled direct-conv structure.

MetaSchedule's x86 space (multi-level tiling "SSRSRS") stalls on convs in ``NCHW{b}c``: tuned, the
fused PSConv kernel of ``fused.py`` (four slot views summed per reduction step) ran at about half
the GFLOP/s of the plain 3x3 convs it replaces, and those at half of onnxruntime's. The structure
oneDNN and NeoCPU use for direct convs fits both: a tile of ``ow_tile`` output pixels x ``oc_tile``
output blocks is held in vector registers (one register per pixel and block) across the whole
reduction; each step loads one weight vector per block and broadcasts one input value per pixel
into it. The reduction runs input block, (for the PSConv kernel) slot, kh, kw, lane, and the tile is
written out once, with the kernel's bias, residual add and relu applied on the way. A tile fits the
registers: ``ow_tile x oc_tile`` accumulators, ``oc_tile`` weight vectors and one broadcast value
(16 registers on AVX2 allow 14 x 1 or 6 x 2, 32 on AVX-512 30 x 1 ... 6 x 4); past that they spill
and every multiply-add waits on memory.

A conv's block asks for this rule by name (its ``schedule_rule`` annotation: set in the PSConv
kernel's TE compute, and on TOPI's ``conv2d_NCHWc`` by the legalization); MetaSchedule's
``ApplyCustomRule`` calls it in place of its default rules. Each output-block tile width is a design
space of its own, with the pixel tile width sampled, so the search still tunes it (its tile-size
mutator moves it) and the trace replays from a database.
"""

from __future__ import annotations

RULE = "psdeploy_register_tiled"
TARGET_KEY = "cpu"  # llvm targets' key: the rule is looked up as s_tir.meta_schedule.cpu.<RULE>
# on the loops this rule made parallel or vector: MetaSchedule's RewriteParallelVectorizeUnroll postproc leaves
# annotated loops alone (without it, it adds its sampled auto-unroll to the tile loop: an isolated 64@56 PSConv
# kernel ran 1.7x slower with that postproc than without it)
MARK = "psdeploy.register_tiled"
VECTOR_REGISTERS = {16: 32, 8: 16}  # fp32 lanes of a block -> vector registers (AVX-512, AVX2); else SSE's 16
MAX_OC_TILE = 4  # output blocks per tile: oneDNN's widest on AVX2 and AVX-512


def register_tiled(sch, block):
    """Schedule one blocked conv block (``b, o, h, w, lane`` spatial, then its reductions): one design space
    per output-block tile width, each with its pixel tile width sampled up to what the registers hold."""
    _, oc, _, _, lane, *_ = sch.get_loops(block)
    registers = VECTOR_REGISTERS.get(int(sch.get(lane).extent), 16)
    spaces = []
    for oc_tile in (t for t in range(1, MAX_OC_TILE + 1) if int(sch.get(oc).extent) % t == 0):
        # the accumulators, one weight vector per output block and one broadcast input value
        ow_tile_max = (registers - oc_tile - 1) // oc_tile
        if oc_tile == 1 or ow_tile_max >= 2:
            space = sch.copy()
            _tile(space, block, oc_tile, ow_tile_max)
            spaces.append(space)
    return spaces  # the reduction's init is split off by MetaSchedule's postproc, at the input-block loop


def _tile(sch, block, oc_tile: int, ow_tile_max: int) -> None:
    b, oc, oh, ow, lane, *reductions = sch.get_loops(block)
    outer, kh, kw, in_lane = _reduction_order(sch, reductions, int(sch.get(lane).extent))
    ow_outer, ow_tile = sch.split(ow, sch.sample_perfect_tile(ow, n=2, max_innermost_factor=ow_tile_max))
    oc_outer, oc_tile_loop = sch.split(oc, [None, oc_tile])
    sch.reorder(b, oc_outer, oh, ow_outer, *outer, kh, kw, in_lane, oc_tile_loop, ow_tile, lane)
    written = sch.cache_write(block, 0, "local")
    _inline_epilogue(sch, written)
    sch.reverse_compute_at(written, ow_outer, preserve_unit_loops=True)  # same loops whatever the tiles
    rows = sch.fuse(b, oc_outer, oh)
    sch.parallel(rows)
    sch.vectorize(lane)
    for loop in (*outer[1:], oc_tile_loop, ow_tile):  # a PSConv kernel's slot choice folds once unrolled
        sch.unroll(loop)
    written_lane = sch.get_loops(written)[-1]
    sch.vectorize(written_lane)
    marked = [rows, lane, written_lane]
    for producer in sch.get_producers(block):  # left to this rule (the PSConv kernel's padded input): copied in
        if sch.get(producer).annotations.get("schedule_rule") == "None":  # parallel, whole vectors at a time
            *spatial, producer_lane = sch.get_loops(producer)
            producer_rows = sch.fuse(*spatial[:3])
            sch.parallel(producer_rows)
            sch.vectorize(producer_lane)
            marked += [producer_rows, producer_lane]
    for loop in marked:
        sch.annotate(loop, MARK, 1)


def _reduction_order(sch, reductions, lanes: int):
    """``([input block, slot], kh, kw, input lane)`` loops: the PSConv kernel's own (r, slot, kh, kw, lane),
    or TOPI ``conv2d_NCHWc``'s (ic, kh, kw) with ic split into the input's blocks: ``lanes`` channels, or all
    of them where there are fewer (the stem's 3 channels, one block)."""
    if len(reductions) == 5:
        r, slot, kh, kw, in_lane = reductions
        return [r, slot], kh, kw, in_lane
    ic, kh, kw = reductions
    in_block, in_lane = sch.split(ic, [None, min(lanes, int(sch.get(ic).extent))])
    return [in_block], kh, kw, in_lane


def _inline_epilogue(sch, written) -> None:
    """Fold the elementwise ops that read the conv's output (bias add, relu, an int8 kernel's requantization)
    into the write-out of the tile. A residual add reads a second operand that an int8 kernel computes in
    blocks of its own (the residual's dequantize): those are computed into the add first, or the add could
    not join the write-out, and the rest of the epilogue would run as a second pass over the whole output."""
    from tvm.s_tir.schedule import ScheduleError

    while len(consumers := sch.get_consumers(written)) == 1:
        _inline_producers(sch, consumers[0], skip=sch.get(written).name_hint)
        try:
            sch.reverse_compute_inline(consumers[0])
        except ScheduleError:
            return


def _inline_producers(sch, block, skip: str) -> None:
    """Compute every elementwise producer of ``block`` but the block named ``skip`` into its consumers."""
    from tvm.s_tir.schedule import ScheduleError

    for producer in sch.get_producers(block):
        if sch.get(producer).name_hint == skip:
            continue
        _inline_producers(sch, producer, skip)
        try:
            sch.compute_inline(producer)
        except ScheduleError:
            pass  # not inlinable (a reduction): left to MetaSchedule's own rules


def request_register_tiling(bb, call, block_name: str) -> None:
    """Annotate the block ``block_name`` of the PrimFunc a Relax ``call_tir`` calls with this rule."""
    from tvm import s_tir

    function = call.args[0]
    sch = s_tir.Schedule(bb.get()[function])
    sch.annotate(sch.get_sblock(block_name), "schedule_rule", RULE)
    bb.update_func(function, sch.mod["main"])


def register_schedule_rules() -> None:
    """Make the rule known to MetaSchedule (idempotent): the tuning process's space generator calls it."""
    import tvm

    tvm.register_global_func(f"s_tir.meta_schedule.{TARGET_KEY}.{RULE}", register_tiled, override=True)
