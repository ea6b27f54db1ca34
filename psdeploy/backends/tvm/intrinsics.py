"""Register only the tensor intrinsics a target's MetaSchedule rules can use, not every vendor's.

``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose package ``__init__`` parses every
vendor's intrinsics through TVMScript, CUDA's MMA and WMMA first: 25 s of CPU per tuning
command on 2 cores, spent before the first trial. A CPU target's rules (x86 VNNI/AVX-512,
Arm dot-product/NEON, RISC-V vectors) use only the CPU modules, which take about a second.
So the package is entered without running its ``__init__`` and the modules for this target
are imported; ``TuneContext``'s import then finds the package loaded. A CUDA target imports
CUDA's module the same way, so one process may tune for both.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

from psdeploy.backends.targets import Target

PACKAGE = "tvm.s_tir.tensor_intrin"
MODULES = {"cpu": ("x86", "arm_cpu", "riscv_cpu"), "cuda": ("cuda",)}


def register_tensor_intrinsics(target: Target) -> None:
    """Make the intrinsics ``target``'s default schedule rules tensorize with known to TVM."""
    import tvm.s_tir

    if PACKAGE not in sys.modules:
        package = importlib.util.module_from_spec(importlib.util.find_spec(PACKAGE))
        sys.modules[PACKAGE] = package
        tvm.s_tir.tensor_intrin = package
    for name in MODULES[target.device]:
        importlib.import_module(f"{PACKAGE}.{name}")
