"""Target names users type -> a backend and its concrete target.

Short names: ``llvm`` (this CPU), ``cuda``, ``openvino-cpu``; or a TVM JSON target dict
(``'{"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 16}'``). TVM 0.27 rejects
the old ``"llvm -mcpu=..."`` strings and ``-mcpu=native``, so we resolve the host CPU
ourselves.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from psdeploy.errors import PsdeployError

SHORT_NAMES = ("llvm", "cuda", "openvino-cpu")
DEFAULT_CUDA_ARCH = "sm_90"  # H100/H200, the GPUs our users deploy to


@dataclass(frozen=True)
class TargetSpec:
    backend: str  # "tvm" or "openvino"
    name: str  # what the user asked for
    tvm_target: dict[str, object] | None = None  # the TVM target dict, for backend "tvm"

    @property
    def device(self) -> str:
        if self.backend == "openvino":
            return "cpu"
        return "cuda" if self.tvm_target and self.tvm_target.get("kind") == "cuda" else "cpu"

    @property
    def key(self) -> str:
        """Readable, stable directory name for tuning records of exactly this target."""
        if self.tvm_target is None:
            return self.name
        digest = hashlib.sha256(json.dumps(self.tvm_target, sort_keys=True).encode()).hexdigest()[:10]
        label = "-".join(str(self.tvm_target.get(k)) for k in ("kind", "mcpu", "arch") if self.tvm_target.get(k))
        return f"{label}-{digest}"


def require_tvm():
    try:
        import tvm  # noqa: F401
        from tvm import relax  # noqa: F401
    except ImportError as exc:
        raise PsdeployError(
            f"the TVM backend needs Apache TVM: pip install 'psdeploy[tvm]' ({exc.__class__.__name__}: {exc})"
        ) from None
    return tvm


def require_openvino():
    try:
        import openvino
    except ImportError:
        raise PsdeployError("the openvino-cpu target needs OpenVINO: pip install 'psdeploy[openvino]'") from None
    return openvino


def host_cpu() -> str:
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def parse_target(text: str, mcpu: str | None = None, cores: int | None = None,
                 cuda_arch: str | None = None) -> TargetSpec:
    """Resolve ``--target`` (and its refinements) into a ``TargetSpec``; unknown names are errors."""
    text = text.strip()
    if text == "openvino-cpu":
        require_openvino()
        return TargetSpec("openvino", text)
    if text.startswith("{"):
        try:
            target = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PsdeployError(f"--target: not valid JSON ({exc.msg}); expected a TVM target dict") from None
        if not isinstance(target, dict) or "kind" not in target:
            raise PsdeployError('--target: a TVM target dict needs a "kind", e.g. {"kind": "llvm"}')
    elif text == "llvm":
        target = {"kind": "llvm"}
    elif text == "cuda":
        target = {"kind": "cuda"}
    else:
        raise PsdeployError(f"--target {text!r}: unknown target; expected one of {', '.join(SHORT_NAMES)} "
                            f"or a TVM JSON target dict")
    tvm = require_tvm()
    if target["kind"] == "llvm":
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
    return TargetSpec("tvm", text if not text.startswith("{") else "tvm-json", target)
