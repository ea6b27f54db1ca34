"""A MetaSchedule rule for the blocked integer convs of ``int8_conv.py``: register tiles of VNNI dot products.

The structure of ``register_tiling.py`` (a tile of ``ow_tile`` output pixels x ``oc_tile`` output blocks
held in vector registers across the whole reduction, written out once with the epilogue folded in),
with VNNI's 4-channel reduction as the innermost step: per step one 64-byte weight vector per output
block (16 lanes x 4 input channels) and, per pixel, one broadcast 32-bit word of 4 input channels
feed one ``vpdpbusd`` into that pixel's int32 accumulator (``dot_16x4_vnni``, tensorized here). The
reduction runs input block, (PSConv) slot, kh, kw, channel quad. A tile fits AVX-512's 32 registers:
``ow_tile x oc_tile`` accumulators, ``oc_tile`` weight vectors, one broadcast.

MetaSchedule's own int8 path (multi-level tiling with the VNNI intrinsic) tiles these convs like any
other and lands far from this structure; the conv blocks name this rule (``schedule_rule``) instead.
Each output-block tile width is a design space, the pixel tile width sampled, so tuning still moves it.
"""

from __future__ import annotations

from psdeploy.backends.tvm.int8_conv import INT8_RULE
from psdeploy.backends.tvm.register_tiling import MARK, MAX_OC_TILE, TARGET_KEY, _inline_epilogue
from psdeploy.backends.tvm.vnni import INTRIN, register_vnni_intrinsic

VECTOR_REGISTERS = 32  # AVX-512


def int8_tiled(sch, block):
    """One design space per output-block tile width (loops ``b, o, h, w, lane`` then the reduction)."""
    _, oc, *_ = sch.get_loops(block)
    spaces = []
    for oc_tile in (t for t in range(1, MAX_OC_TILE + 1) if int(sch.get(oc).extent) % t == 0):
        ow_tile_max = (VECTOR_REGISTERS - oc_tile - 1) // oc_tile
        space = sch.copy()
        _tile(space, block, oc_tile, ow_tile_max)
        spaces.append(space)
    return spaces


def _tile(sch, block, oc_tile: int, ow_tile_max: int) -> None:
    b, oc, oh, ow, lane, *reductions = sch.get_loops(block)
    *outer, kh, kw, quad, channel = reductions  # outer: input block [, slot]
    ow_outer, ow_tile = sch.split(ow, sch.sample_perfect_tile(ow, n=2, max_innermost_factor=ow_tile_max))
    oc_outer, oc_tile_loop = sch.split(oc, [None, oc_tile])
    sch.reorder(b, oc_outer, oh, ow_outer, *outer, kh, kw, quad, oc_tile_loop, ow_tile, lane, channel)
    written = sch.cache_write(block, 0, "local")
    _inline_epilogue(sch, written)
    sch.reverse_compute_at(written, ow_outer, preserve_unit_loops=True)
    rows = sch.fuse(b, oc_outer, oh)
    sch.parallel(rows)
    for loop in (*outer[1:], oc_tile_loop, ow_tile):  # a PSConv kernel's slot rate folds once unrolled
        sch.unroll(loop)
    written_lane = sch.get_loops(written)[-1]
    sch.vectorize(written_lane)
    marked = [rows, written_lane]
    for producer in sch.get_producers(block):  # the padded input: copied in parallel, whole vectors at a time
        if sch.get(producer).annotations.get("schedule_rule") == "None":
            *spatial, producer_lane = sch.get_loops(producer)
            producer_rows = sch.fuse(*spatial[:3])
            sch.parallel(producer_rows)
            sch.vectorize(producer_lane)
            marked += [producer_rows, producer_lane]
    init = sch.decompose_reduction(block, outer[0])
    init_lane = sch.get_loops(init)[-1]
    sch.vectorize(init_lane)
    sch.tensorize(lane, INTRIN)
    # tensorized, the tile loops are the innermost of their block: unmarked, MetaSchedule's postproc would fuse
    # and vectorize them, fail, and drop every candidate with a pixel tile wider than 1
    marked += [init_lane, oc_tile_loop, ow_tile]
    for loop in marked:
        sch.annotate(loop, MARK, 1)


def register_int8_rule() -> None:
    """Make the rule known to MetaSchedule (idempotent)."""
    import tvm

    register_vnni_intrinsic()
    tvm.register_global_func(f"s_tir.meta_schedule.{TARGET_KEY}.{INT8_RULE}", int8_tiled, override=True)
