"""The TVM runtime a bundle carries: ``libtvm_runtime`` (and its CUDA part), and tvm_ffi for the server's Python.

Modules need only the runtime library (3.4 MB), never ``libtvm_compiler`` (259 MB), and the runner drives it
through ``tvm_ffi`` alone, so no TVM Python file is needed. ``apache-tvm-ffi`` is built per CPython: its
wheel for the server's Python (and that of ``typing-extensions``, which it imports) is fetched here, at the
exact version this build runs, by pip.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from psdeploy.errors import PsdeployError

CUDART = "libcudart.so.13"  # what libtvm_runtime_cuda.so links against (TVM 0.27's wheel, CUDA 13)
WHEELS = ("apache-tvm-ffi", "typing-extensions")  # tvm_ffi (built per CPython) and the one package it requires
CUDART_PLACES = ("/usr/local/cuda/lib64", "/usr/local/cuda/lib", "/usr/local/cuda-*/lib64", "/usr/local/cuda-*/lib")


def check_python(python: str) -> str:
    """``--python`` as MAJOR.MINOR of a CPython 3."""
    if not re.fullmatch(r"3\.\d{1,2}", python):
        raise PsdeployError(f"--python {python}: expected a CPython version as MAJOR.MINOR, e.g. 3.12")
    return python


def _tvm_lib() -> Path:
    import tvm

    return Path(tvm.__file__).parent / "lib"


def _cudart() -> Path:
    for place in [os.environ.get("CUDA_HOME", "") + "/lib64", *CUDART_PLACES]:
        for folder in sorted(glob.glob(place), reverse=True):
            if (Path(folder) / CUDART).is_file():
                return (Path(folder) / CUDART).resolve()
    raise PsdeployError(f"a bundle of cuda modules ships {CUDART} (libtvm_runtime_cuda.so needs it), and none was "
                        f"found here under {', '.join(CUDART_PLACES)} or $CUDA_HOME/lib64; install the CUDA 13 toolkit")


def fetch_wheel(package: str, python: str, into: Path) -> Path:
    """The wheel of ``package`` at its installed version for CPython ``python``, downloaded by pip."""
    version = metadata.version(package)
    with tempfile.TemporaryDirectory(prefix="psdeploy-wheel-") as tmp:
        command = [sys.executable, "-m", "pip", "download", f"{package}=={version}", "--python-version", python,
                   "--only-binary=:all:", "--no-deps", "--quiet", "--disable-pip-version-check", "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode or len(wheels) != 1:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise PsdeployError(f"--python {python}: could not fetch {package}=={version} for CPython {python} with "
                                f"pip ({last}); expected a Python version it is published for and a package index")
        return Path(shutil.copy2(wheels[0], into / wheels[0].name))


def add_runtime(stage: Path, python: str, cuda: bool) -> dict[str, str]:
    """Copy the runtime into ``stage/runtime/``; its files by role, relative to ``stage``."""
    folder = stage / "runtime"
    folder.mkdir()
    files = {"libtvm_runtime": _tvm_lib() / "libtvm_runtime.so"}
    if cuda:
        files |= {"libtvm_runtime_cuda": _tvm_lib() / "libtvm_runtime_cuda.so", "libcudart": _cudart()}
    out = {}
    for role, path in files.items():
        shutil.copy2(path, folder / path.name)
        out[role] = f"runtime/{path.name}"
    out["wheels"] = [f"runtime/{fetch_wheel(package, python, folder).name}" for package in WHEELS]
    return out
