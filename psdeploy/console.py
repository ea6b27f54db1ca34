"""Rich rendering of the API's results; no logic lives here."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from psdeploy.verify.parity import ParityReport

_WIDTH = None if sys.stdout.isatty() else 120  # logs (CI, pipes) get wide, unwrapped tables
console = Console(highlight=False, width=_WIDTH)
err_console = Console(stderr=True, highlight=False, width=_WIDTH)


def millions(n: int) -> str:
    return f"{n / 1e6:,.3f}M"


def giga(n: int) -> str:
    return f"{n / 1e9:,.3f}G"


def parity_table(report: ParityReport) -> Table:
    table = Table(title=f"parity: {report.candidate} vs {report.reference} (tolerance {report.tolerance:g})")
    for col in ("input", "seed", "output", "max abs err", "max abs ref", "rel err", "cosine", "ok"):
        table.add_column(col, justify="right" if col not in ("output", "input") else "left")
    for row in report.rows():
        table.add_row(
            str(row["input"]), str(row["seed"]), str(row["name"]), f"{row['max_abs_err']:.3g}",
            f"{row['max_abs_ref']:.3g}", f"{row['rel_err']:.3g}", f"{row['cosine']:.7f}",
            "[green]yes[/]" if row["ok"] else "[red]NO[/]",
        )
    return table


def search_table(rows: list[dict[str, object]]) -> Table:
    """--lowering auto: per layer geometry, each candidate's median and the one kept."""
    names = [k for k in rows[0]["timings_ms"] if k != "plain"]
    table = Table(title="lowering search (median ms, interleaved with the plain 3x3 of the same shape)")
    for col in ("layer geometry", "layers", "plain 3x3", *names, "kept", "ratio to plain"):
        table.add_column(col)
    for row in rows:
        t = row["timings_ms"]
        table.add_row(str(row["geometry"]), str(len(row["layers"])), f"{t['plain']:.3f}",
                      *(f"{t[n]:.3f}" for n in names), str(row["lowering"]), f"{row['ratio_to_plain']:.3f}x")
    return table
