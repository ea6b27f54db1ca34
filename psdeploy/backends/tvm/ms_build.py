"""What MetaSchedule's builder processes run: build one candidate and export it, importing only TVM.

MetaSchedule's default build function imports ``tvm.s_tir.tensor_intrin``, which parses every
vendor's tensor intrinsics (ROCm, CUDA MMA, ...) through TVMScript: ~30 s of CPU per builder
process on these machines, before any real work. fp32 schedules of our graphs use no tensor
intrinsics, so this builds exactly as the default does, minus that import. The functions
travel to the workers by value (``cloudpickle``), so a worker never imports psdeploy (its
API, ONNX tooling, ...): a worker starts in the time it takes to import TVM.
"""

from __future__ import annotations

import sys


def build_candidate(mod, target, _params):
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def build_and_export(mod, target) -> str:
    """The path of a tar holding the built candidate (what MetaSchedule's runners load or upload)."""
    import os
    import tempfile

    from tvm.support.tar import tar

    path = os.path.join(tempfile.mkdtemp(), "tvm_tmp_mod." + tar.output_format)
    build_candidate(mod, target, None).export_library(path, fcompile=tar)
    return path


def send_by_value() -> None:
    """Pickle this module's functions by value, so builder processes need not import psdeploy."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
