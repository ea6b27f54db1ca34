"""What a tuning run may spend and where it measures: ``--tune-time`` and ``--rpc``, parsed once.

Users think in wall time ("tune for an hour") and in machines ("measure on the Xeons"); these
are the typed forms every layer passes on, so a value is checked where it is typed (the CLI,
a recipe, ``psdeploy.compile``) with the same words, never deep inside MetaSchedule.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import PositiveFloat, PositiveInt, field_validator

from psdeploy.bounds import TUNE_TRIALS
from psdeploy.errors import PsdeployError
from psdeploy.schema import Strict

DEFAULT_TUNING_DB = Path("tuning-db")

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smh])")


def parse_duration(text: str | float, option: str = "--tune-time") -> float:
    """Seconds in ``90s``, ``20m``, ``1h`` or ``1h30m``; a bare number is seconds."""
    spoken = str(text).strip().lower()
    seconds = None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    elif re.fullmatch(r"\d+(?:\.\d+)?", spoken):
        seconds = float(spoken)
    elif spoken and _DURATION.sub("", spoken) == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(spoken))
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise PsdeployError(f"{option} {text!r}: expected a positive duration such as 90s, 20m or 1h")
    return seconds


def recipe_duration(value: str | float | None) -> float | None:
    """A recipe's duration key (compile ``tuning.time``, report ``tvm.time``) as seconds; a ``ValueError``
    (what the schema reports, naming the key) when it is not one."""
    try:
        return None if value is None else parse_duration(value, "")
    except PsdeployError:
        raise ValueError("expected a positive duration such as 90s, 20m or 1h") from None


class TuningBudget(Strict):
    """A recipe's tuning keys (compile's ``tuning``, a report's ``tvm``): trials, deadline, untuned, database."""

    trials: Annotated[int, TUNE_TRIALS.constraint] = 0  # with ``time``, a cap
    time: str | PositiveFloat | PositiveInt | None = None  # a deadline: "90s", "20m", "1h", or seconds
    untuned: bool = False  # with no budget: build the tasks the database lacks untuned instead of refusing
    database: str = str(DEFAULT_TUNING_DB)

    @field_validator("time")
    @classmethod
    def _duration(cls, value: str | float | None) -> float | None:
        return recipe_duration(value)


@dataclass(frozen=True)
class RpcTracker:
    """A TVM RPC tracker and the key its measuring servers registered under."""

    host: str
    port: int
    key: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_tracker(text: str, option: str = "--rpc") -> tuple[str, int]:
    """``HOST:PORT`` of a tracker (``python -m tvm.exec.rpc_tracker``)."""
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PsdeployError(f"{option} {text!r}: expected HOST:PORT of a TVM RPC tracker, e.g. 10.0.0.5:9190")
    return host, int(port)


def rpc_tracker(address: str | tuple[str, int] | None, key: str | None) -> RpcTracker | None:
    """Both of ``--rpc`` (``HOST:PORT``, or already parsed) and ``--rpc-key``, or neither."""
    if address is None and key is None:
        return None
    if address is None:
        raise PsdeployError(f"--rpc-key {key}: needs --rpc HOST:PORT (the tracker the servers registered with)")
    host, port = parse_tracker(address) if isinstance(address, str) else address
    if not key or not str(key).strip():
        raise PsdeployError(f"--rpc {host}:{port}: needs --rpc-key KEY (the key the servers registered under)")
    return RpcTracker(host, port, str(key).strip())
