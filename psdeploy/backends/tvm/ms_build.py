"""MetaSchedule's candidate build, without its 30-second import.

MetaSchedule starts a fresh builder process per batch, and its default build
function imports ``tvm.s_tir.tensor_intrin``, which parses every vendor's tensor
intrinsics (ROCm, CUDA MMA, ...) through TVMScript: ~30 s of CPU per batch on
these machines, before any real work. fp32 schedules of our graphs use no tensor
intrinsics, so this builds exactly as the default does, minus that import. It
lives in a module of its own so the builder processes import nothing else.
"""

from __future__ import annotations


def build_candidate(mod, target, _params):
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)
