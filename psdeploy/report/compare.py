"""Regression gate: which ratios got worse than an earlier report, beyond the recorded noise."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from psdeploy.errors import PsdeployError
from psdeploy.report.run import SCHEMA


@dataclass
class RatioChange:
    key: str
    old: float
    new: float
    worse: bool  # new band lies entirely above the old band


READABLE = (SCHEMA, "psdeploy.report/2", "psdeploy.report/1")  # 1: before precisions, every figure fp32; 2: one load


def _ratios(payload: dict, source: str) -> dict[str, tuple[float, float, float]]:
    if payload.get("schema") not in READABLE:
        raise PsdeployError(f"{source}: schema {payload.get('schema')!r}, expected one of {', '.join(READABLE)}")
    return {f"{m['backend']} {m.get('precision', 'f32')} | {m['group']} | {m['case']}":
            (m["ratio"], m["ratio_p10"], m["ratio_p90"]) for m in payload["measurements"]}


def read_earlier(old_path: Path) -> dict:
    """The earlier report.json, read (and its schema checked) before a report is timed and written: it may be
    the very file ``report -o SAME_DIR --force`` replaces."""
    try:
        old_payload = json.loads(Path(old_path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PsdeployError(f"--compare {old_path}: unreadable report JSON ({exc.__class__.__name__})") from None
    _ratios(old_payload, str(old_path))
    return old_payload


def compare_reports(old_path: Path, new_payload: dict, old_payload: dict | None = None) -> list[RatioChange]:
    """The ratios of ``new_payload`` against the earlier report at ``old_path`` (``old_payload``: as read already)."""
    old_payload = read_earlier(old_path) if old_payload is None else old_payload
    old, new = _ratios(old_payload, str(old_path)), _ratios(new_payload, "this report")
    changes = []
    for key in sorted(set(old) & set(new)):
        (o, _, o_hi), (n, n_lo, _) = old[key], new[key]
        changes.append(RatioChange(key, o, n, worse=n > o and n_lo > o_hi))
    return changes
