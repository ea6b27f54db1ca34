"""Whether this machine can run what a TVM target builds.

A CUDA module needs a visible GPU. An llvm module built for another CPU (``--mcpu
skylake-avx512`` on an AVX2 machine) holds instructions this CPU may lack, and it dies
with SIGILL or SIGSEGV the moment it runs: a build for another machine is fine, running
it here is not, so psdeploy asks before it runs, verifies or tunes anything locally.
"""

from __future__ import annotations

from pathlib import Path

from psdeploy.backends.targets import Target, host_cpu

CPUINFO = Path("/proc/cpuinfo")
# the vector ISA extensions LLVM emits for fp32/int8 kernels, as LLVM names them; /proc/cpuinfo spells them
# with underscores (avx512_vnni) or none (avx512f): compared with both stripped
KERNEL_ISA = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd",
              "avx512vnni", "avx512bf16", "avx512fp16", "avxvnni", "amx-tile", "amx-int8", "amx-bf16")


def cuda_available() -> bool:
    import tvm

    return bool(tvm.cuda(0).exist)


def _bare(name: str) -> str:
    return name.replace("_", "").replace("-", "")


def host_cpu_flags() -> frozenset[str] | None:
    """This CPU's feature flags as the kernel reports them (None where it does not: then nothing is refused)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(_bare(flag) for flag in line.partition(":")[2].split())
    return None


def missing_cpu_features(target: Target) -> list[str]:
    """The kernel ISA extensions ``target`` builds with that this CPU lacks."""
    flags = host_cpu_flags()
    if target.tvm_target is None or target.device != "cpu" or flags is None:
        return []
    import tvm
    from tvm.target import codegen

    built_with = codegen.llvm_get_cpu_features(tvm.target.Target(target.tvm_target))
    return [feature for feature in KERNEL_ISA if feature in built_with and _bare(feature) not in flags]


def cannot_run_here(target: Target) -> str | None:
    """Why this machine cannot run code built for ``target``; None when it can."""
    if target.device == "cuda":
        return None if cuda_available() else "no CUDA GPU is visible here"
    missing = missing_cpu_features(target)
    if not missing:
        return None
    return (f"this CPU ({host_cpu()}) lacks {', '.join(missing)}, which code built for --mcpu "
            f"{target.tvm_target['mcpu']} uses")
