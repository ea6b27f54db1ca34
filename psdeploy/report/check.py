"""Is a report directory complete and well-formed? (What CI asserts: never a latency threshold.)

    python -m psdeploy.report.check reports/ci
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from psdeploy.bounds import DEFAULT_TOLERANCE
from psdeploy.errors import PsdeployError
from psdeploy.report.run import SCHEMA

REQUIRED_STATS = ("iterations", "median_ms", "p90_ms", "p99_ms", "min_ms", "mean_ms", "cv_pct", "noisy")


def check_report(directory: Path) -> int:
    """Number of measurements; raises ``PsdeployError`` naming the first problem."""
    for name in ("report.md", "report.json", "report.csv", "ratios.png"):
        if not (directory / name).is_file() or (directory / name).stat().st_size == 0:
            raise PsdeployError(f"{directory}: {name} is missing or empty")
    payload = json.loads((directory / "report.json").read_text())
    if payload.get("schema") != SCHEMA:
        raise PsdeployError(f"{directory}/report.json: schema {payload.get('schema')!r}, expected {SCHEMA!r}")
    measurements = payload["measurements"]
    if not measurements:
        raise PsdeployError(f"{directory}/report.json: no measurements")
    for m in measurements:
        missing = [k for k in REQUIRED_STATS if k not in m["stats"]]
        if missing or m["stats"]["iterations"] < 30 or not m["ratio"] > 0:
            raise PsdeployError(f"{directory}/report.json: {m['backend']} {m['group']} {m['case']} is incomplete")
        rel_err, cosine = m["parity_rel_err"], m["mean_cosine"]
        if m["precision"] == "f32" and (rel_err is None or rel_err > DEFAULT_TOLERANCE):
            raise PsdeployError(f"{directory}/report.json: {m['case']} failed parity ({rel_err})")
        if m["precision"] != "f32" and (cosine is None or cosine < payload["config"]["gate"]["min_cosine"]):
            raise PsdeployError(f"{directory}/report.json: {m['case']} ({m['precision']}) failed the accuracy gate "
                                f"(mean cosine {cosine})")
    rows = list(csv.DictReader((directory / "report.csv").open()))
    if len(rows) != len(measurements):
        raise PsdeployError(f"{directory}/report.csv: {len(rows)} rows for {len(measurements)} measurements")
    if "## Environment" not in (directory / "report.md").read_text():
        raise PsdeployError(f"{directory}/report.md: no environment section")
    return len(measurements)


if __name__ == "__main__":
    try:
        count = check_report(Path(sys.argv[1]))
    except (PsdeployError, KeyError, json.JSONDecodeError) as exc:
        print(f"report check failed: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"report ok: {count} measurements")
