"""The range of every number a user gives psdeploy, declared once, and the memory an input shape needs.

Each ``Bound`` is read by the command line (a click range, so ``--help`` shows it), by the recipe
schemas (``constraint``) and by the API (``check``), so a flag, a recipe key and a Python
argument refuse the same values with the same words.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from psdeploy.errors import PsdeployError


@dataclass(frozen=True)
class Bound:
    """Integers (or, with ``real``, finite numbers) from ``low`` to ``high``, both included; None: unbounded."""

    option: str
    low: float | None = None
    high: float | None = None
    real: bool = False

    @property
    def expected(self) -> str:
        kind = "a number" if self.real else "an integer"
        low = f">= {self.low:g}" if self.low is not None else ""
        high = f"<= {self.high:g}" if self.high is not None else ""
        return f"{kind} {' and '.join(filter(None, (low, high)))}".strip()

    def check(self, value: Any, option: str | None = None) -> Any:
        """``value`` if it lies in the range, else a one-line error naming the option."""
        kinds = (int, float) if self.real else (int,)
        ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
        if ok and self.low is not None:
            ok = value >= self.low
        if ok and self.high is not None:
            ok = value <= self.high
        if not ok:
            raise PsdeployError(f"{option or self.option} {value!r}: expected {self.expected}")
        return value

    @property
    def constraint(self) -> Any:
        """This range for a recipe key: ``key: Annotated[int, BOUND.constraint] = default`` (pydantic)."""
        return Field(ge=self.low, le=self.high)


MAX_CORES = 4096  # more threads than any CPU psdeploy targets has cores: a typo, not a machine

THREADS = Bound("--threads", 1, MAX_CORES)
NUM_CORES = Bound("--num-cores", 1, MAX_CORES)
BATCH = Bound("--batch", 1)
ITERS = Bound("--iters", 30)  # a median and a p90 need that many timed rounds
LOADS = Bound("--loads", 1, 20)  # fresh processes a benchmark times its models in
DEFAULT_LOADS = 4  # enough to show a model with two speeds; each costs a process start and a model load
WARMUP = Bound("--warmup", 0)
MAX_WARMUP = Bound("max_warmup", 0)
RUNS = Bound("--runs", 1)
ROUNDS = Bound("--rounds", 1, 50)  # profile --against: alternating rounds, each loading both models anew
DEFAULT_PROFILE_ROUNDS = 4  # two in each order: enough for a median and a band; each costs two model loads
TOP = Bound("--top", 1)
TUNE_TRIALS = Bound("--tune-trials", 0)
# 13: the TorchScript exporter's oldest; 28: the newest the pinned onnx defines (a test checks), as torch's
# exporter writes opset 18 for one it does not know
OPSET = Bound("--opset", 13, 28)
TOLERANCE = Bound("--tolerance", 0, 1, real=True)  # max|err| / max|ref|: 0 asks for exact, beyond 1 checks nothing
DEFAULT_TOLERANCE = 1e-4  # fp32 parity every artifact must meet unless the user says otherwise
SECONDS = Bound("min_seconds", 0, real=True)
# the int8 accuracy gate (each lowered only on request): outputs beside fp32 on held-out calibration samples,
# and the demo's held-out top-1 beside the checkpoint's
MIN_COSINE = Bound("--min-cosine", 0, 1, real=True)
MIN_AGREEMENT = Bound("--min-agreement", 0, 1, real=True)  # fraction of samples with fp32's top-1 class
MAX_TOP1_DROP = Bound("--max-top1-drop", 0, 100, real=True)  # points of top-1
DEFAULT_MIN_COSINE = 0.99
DEFAULT_MIN_AGREEMENT = 0.95
DEFAULT_MAX_TOP1_DROP = 0.5

# accuracy and calibration on image folders
LIMIT = Bound("--limit", 1)  # images measured: a class-balanced sample of the folder
WORKERS = Bound("--workers", 0, 64)  # processes decoding images (0: the main process)
IMAGE_SIDE = Bound("--resize/--crop", 1, 16384)  # pixels: the side of a resized or cropped image
CALIBRATION_SIZE = Bound("--calibration-size", 15)  # images calibrated on; with a third as many held out, 20 at least
DEFAULT_CALIBRATION_SIZE = 300  # NNCF's default subset size
DEFAULT_IMAGE_BATCH = 8

# Memory an input needs, estimated from its element count: 4 bytes (fp32) times the input plus the
# activations alive at once. The widest activation of the supported networks holds up to 21.3x the
# input's elements (the digits nets' stage 1: 64 channels at full resolution of a 3-channel input;
# ResNet-50's stage 1: 5.3x), and a bottleneck keeps about two of them (its input, for the shortcut,
# and its output): 1 + 2 x 21.3 ~ 44. An upper estimate for ImageNet-sized nets, meant to refuse a
# typo'd shape before anything is allocated, not to plan memory.
BYTES_PER_ELEMENT = 4
ACTIVATION_FACTOR = 44
GIB = 2**30


def available_bytes() -> int:
    """Memory this machine can give now: psutil's ``available`` where installed, else the free pages."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_memory(where: str, shape: tuple[int, ...]) -> None:
    """Refuse an input ``shape`` whose tensors would not fit in memory, before any is allocated (``where``:
    the flag and value, or file and key, it came from)."""
    needed = math.prod(shape) * BYTES_PER_ELEMENT * ACTIVATION_FACTOR
    have = available_bytes()
    if needed > have:
        raise PsdeployError(f"{where}: an input of {','.join(map(str, shape))} needs ~{needed / GIB:,.1f} GiB with its "
                            f"activations (this machine has {have / GIB:,.1f} GiB available)")


# the values each enumerated build option accepts (the command line's choices, BuildOptions' check)
PRECISIONS = ("f32", "f16", "bf16", "int8")
WINOGRAD = ("off", "f2", "f4")
LAYOUTS = ("nchw", "nhwc", "nchwc")
