"""Target names users type -> a ``Target``: which backend builds, and for exactly what.

Short names: ``onnxruntime-cpu``, ``openvino-cpu``, ``llvm`` (this CPU), ``cuda``; or a TVM
JSON target dict (``'{"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 16}'``).
``--mcpu``, ``--num-cores`` and ``--cuda-arch`` refine a TVM target. TVM 0.27 rejects the
old ``"llvm -mcpu=..."`` strings and ``-mcpu=native``, so the host CPU is resolved here.

The parsed ``Target`` travels whole: compile, the lowering search and the tuning
database all see the same object, never a name parsed back.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from psdeploy.bounds import NUM_CORES
from psdeploy.errors import PsdeployError

RUNTIME_TARGETS = {"onnxruntime-cpu": "onnxruntime", "openvino-cpu": "openvino"}
SHORT_NAMES = (*RUNTIME_TARGETS, "llvm", "cuda")
DEFAULT_CUDA_ARCH = "sm_90"  # H100/H200, the GPUs our users deploy to


@dataclass(frozen=True)
class Target:
    backend: str  # a registry name: "onnxruntime", "openvino" or "tvm"
    name: str  # what the user asked for
    tvm_target: dict[str, object] | None = None  # the full TVM target dict, for backend "tvm"

    @property
    def device(self) -> str:
        return "cuda" if self.tvm_target and self.tvm_target.get("kind") == "cuda" else "cpu"

    @property
    def threads(self) -> int | None:
        """CPU threads the artifact runs (and its tuning measures) with: the llvm target's ``num-cores``."""
        if self.tvm_target is None or self.tvm_target.get("kind") != "llvm":
            return None
        return int(self.tvm_target.get("num-cores") or 1)

    @property
    def key(self) -> str:
        """Readable, stable name of exactly this target (tuning-database directories)."""
        if self.tvm_target is None:
            return self.name
        digest = hashlib.sha256(json.dumps(self.tvm_target, sort_keys=True).encode()).hexdigest()[:10]
        label = "-".join(str(self.tvm_target.get(k)) for k in ("kind", "mcpu", "arch") if self.tvm_target.get(k))
        return f"{label}-{digest}"

    @property
    def label(self) -> str:
        return self.name if self.tvm_target is None else f"tvm {self.key}"


def host_cpu() -> str:
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def _tvm_dict(text: str | dict[str, object]) -> dict[str, object]:
    if isinstance(text, dict):  # a recipe's target dict, as written
        target = dict(text)
    elif text == "llvm":
        return {"kind": "llvm"}
    elif text == "cuda":
        return {"kind": "cuda"}
    elif not text.startswith("{"):
        raise PsdeployError(f"--target {text!r}: unknown target; expected one of {', '.join(SHORT_NAMES)} "
                            f"or a TVM JSON target dict")
    else:
        try:
            target = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PsdeployError(f"--target: not valid JSON ({exc.msg}); expected a TVM target dict") from None
    if not isinstance(target, dict) or "kind" not in target:
        raise PsdeployError('--target: a TVM target dict needs a "kind", e.g. {"kind": "llvm"}')
    return target


def parse_target(text: str | dict[str, object], mcpu: str | None = None, cores: int | None = None,
                 cuda_arch: str | None = None) -> Target:
    """Resolve ``--target`` (a name, a TVM JSON target, or a recipe's target dict) and its refinements; unknown
    names and misplaced refinements are errors."""
    text = text.strip() if isinstance(text, str) else text
    if cores is not None:
        NUM_CORES.check(cores)
    if isinstance(text, str) and text in RUNTIME_TARGETS:
        for flag, value in (("--mcpu", mcpu), ("--num-cores", cores), ("--cuda-arch", cuda_arch)):
            if value is not None:
                raise PsdeployError(f"{flag} {value}: a TVM target option; {text} chooses its own kernels")
        return Target(RUNTIME_TARGETS[text], text)
    target = _tvm_dict(text)
    try:
        import tvm
    except ImportError as exc:
        raise PsdeployError(f"--target {text}: needs Apache TVM: pip install 'psdeploy[tvm]' "
                            f"({exc.__class__.__name__}: {exc})") from None
    if target["kind"] == "llvm":
        if cuda_arch is not None:
            raise PsdeployError(f"--cuda-arch {cuda_arch}: only for --target cuda")
        target.setdefault("mcpu", mcpu or host_cpu())
        target.setdefault("num-cores", cores or os.cpu_count() or 1)
    elif target["kind"] == "cuda":
        target.setdefault("arch", cuda_arch or DEFAULT_CUDA_ARCH)
        target.setdefault("host", {"kind": "llvm", "mcpu": mcpu or host_cpu()})
    else:
        raise PsdeployError(f"--target: kind {target['kind']!r} is not supported; expected llvm or cuda")
    try:
        tvm.target.Target(target)
    except Exception as exc:  # TVM raises its own error types for bad attributes
        raise PsdeployError(f"--target {json.dumps(target)}: TVM rejects it: {str(exc).splitlines()[-1]}") from None
    return Target("tvm", text if isinstance(text, str) and not text.startswith("{") else "tvm-json", target)
