"""``relax.take`` of constant indices legalized with the indices baked into the kernel.

psdeploy's Gathers are channel permutations whose indices are constants it wrote itself. TOPI's
``take`` passes them to the kernel as an argument buffer, and MetaSchedule times every candidate
on random arguments: in "fast" mode (no bounds check) random indices read out of bounds and the
measuring process dies (a tuning worker is restarted; an RPC server's serving process dies for
good), so every candidate of every gather task failed. Here the index map is part of the kernel's
code: runs of consecutive indices become a balanced tree of ``c < boundary`` selects on the
gathered axis, so the kernel's only arguments are its data and its output, and no argument value
can make it read out of bounds.

The ONNX importer wraps negative Gather indices in the graph (``where(i < 0, i + n, i)``), so the
indices are constants only after ``FoldConstant``; that pass legalizes every op it meets through
the op's registered legalization, so this one is registered for ``relax.take`` (``use_baked_take``)
rather than passed to ``LegalizeOps`` alone. Indices that are not constants get TOPI's gather: in
fast mode the same TIR computed here without the warning TOPI logs from C++ once per node.
"""

from __future__ import annotations

import numpy as np

LEGALIZE_LEVEL = 11  # above TVM's own registration (10)
_registered = False


def index_runs(indices: np.ndarray) -> tuple[list[int], list[int]]:
    """(starts, offsets): output position ``i`` in the run beginning at ``starts[k]`` (and before
    the next start) reads ``i + offsets[k]``; runs of consecutive indices share one offset."""
    flat = indices.astype(np.int64).ravel()
    starts = [0, *(i for i in range(1, len(flat)) if flat[i] != flat[i - 1] + 1)]
    return starts, [int(flat[s]) - s for s in starts]


def _offset_of(position, starts: list[int], offsets: list[int]):
    """The offset of ``position``'s run, as a balanced tree of selects over the run starts."""
    from tvm import tirx

    if len(starts) == 1:
        return tirx.const(offsets[0], str(position.ty))
    middle = len(starts) // 2
    return tirx.Select(position < starts[middle], _offset_of(position, starts[:middle], offsets[:middle]),
                       _offset_of(position, starts[middle:], offsets[middle:]))


def _baked_gather(data, indices: np.ndarray, axis: int):
    from tvm import te, topi

    starts, offsets = index_runs(indices)
    shape = [*data.shape[:axis], len(indices), *data.shape[axis + 1:]]

    def element(*i):
        position = i[axis]
        return data[(*i[:axis], position + _offset_of(position, starts, offsets), *i[axis + 1:])]

    return te.compute(shape, element, name="T_take", tag=topi.tag.INJECTIVE)


def _gather(data, indices, axis: int):
    """TOPI's fast-mode gather (same TIR, same MetaSchedule workload), without its warning."""
    from tvm import te, topi

    k = len(indices.shape)
    shape = [*data.shape[:axis], *indices.shape, *data.shape[axis + 1:]]

    def element(*i):
        j = indices[tuple(i[axis:axis + k])] if k else indices()
        return data[(*i[:axis], j, *i[axis + k:])]

    return te.compute(shape, element, name="T_take", tag=topi.tag.INJECTIVE)


def baked_indices(call) -> np.ndarray | None:
    """The indices of a ``take`` as a vector in ``[0, extent)``, when they are constants in bounds."""
    from tvm import tirx
    from tvm.ir import GenericConst

    data, indices = call.args
    if call.attrs.axis is None or not isinstance(indices, GenericConst):
        return None
    values = indices.value.numpy()
    dims = data.ty.shape
    extent = dims[int(call.attrs.axis) % len(dims)] if dims is not None else None
    if values.ndim != 1 or values.size == 0 or not np.issubdtype(values.dtype, np.integer) \
            or not isinstance(extent, tirx.IntImm):
        return None
    n = int(extent.value)
    if values.min() < -n or values.max() >= n:
        return None  # out of bounds in the graph itself: TOPI's modes decide what that means
    return np.where(values < 0, values + n, values)  # ONNX Gather counts negatives from the end


def legalize_take(bb, call):
    """A ``relax.take`` legalization: indices baked into the kernel when they are constants in bounds."""
    from tvm import topi

    data, indices = call.args
    values = baked_indices(call)
    if values is not None:
        axis = int(call.attrs.axis) % len(data.ty.shape)
        return bb.call_te(lambda d: _baked_gather(d, values, axis), data, primfunc_name_hint="take")
    if call.attrs.mode != "fast" or call.attrs.axis is None:
        return bb.call_te(topi.take, data, indices, call.attrs.axis, mode=call.attrs.mode)
    axis = int(call.attrs.axis) % len(data.ty.shape)
    return bb.call_te(_gather, data, indices, axis, primfunc_name_hint="take")


def use_baked_take() -> None:
    """Make ``legalize_take`` the legalization of ``relax.take`` in this process (every pass that
    legalizes, ``FoldConstant`` included); it computes what TOPI's does."""
    from tvm.ir import register_op_attr

    global _registered
    if not _registered:
        register_op_attr("relax.take", "FLegalize", legalize_take, level=LEGALIZE_LEVEL)
        _registered = True
