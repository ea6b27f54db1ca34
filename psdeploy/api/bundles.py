"""The API of deploy bundles: artifacts (or a report recipe's TVM cases) in one folder a server runs alone,
and the report from what it measured there."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from psdeploy.bounds import ITERS, LOADS
from psdeploy.bundle import BundleResult, Timing, bundle_artifacts, bundle_recipe
from psdeploy.errors import PsdeployError
from psdeploy.fileio import check_destination

MIB = 2**20


def bundle(artifacts: list[str | Path], output: str | Path, *, recipe: str | Path | None = None,
           python: str | None = None, regenerate_seeded: bool = False, iters: int | None = None,
           loads: int | None = None, max_mib: float | None = None, force: bool = False,
           on_entry: Callable[[str], None] | None = None) -> BundleResult:
    """TVM artifacts rebuilt with their weights apart (or, with ``recipe``, every TVM case of a report recipe,
    seeded weights regenerated there), TVM's runtime for CPython ``python`` (default: this one) and ``run.py``,
    in the folder ``output`` (an existing one refused unless ``force``). ``regenerate_seeded``: ``seeded:``
    artifacts' weights are drawn there from their seeds instead of shipped. ``max_mib``: refused when larger."""
    if bool(artifacts) == bool(recipe):
        raise PsdeployError("bundle: give artifact directories or --recipe FILE, not both or neither")
    if max_mib is not None and not max_mib > 0:
        raise PsdeployError(f"--max-mib {max_mib}: expected a size in MiB above 0")
    max_bytes = int(max_mib * MIB) if max_mib else None
    check_destination(Path(output), "-o", directory=True, force=force)
    if recipe:
        if iters is not None or loads is not None or regenerate_seeded:
            raise PsdeployError("--recipe: its timing and seeded weights come from the recipe; drop --iters, "
                                "--loads and --regenerate-seeded")
        if not Path(recipe).is_file():
            raise PsdeployError(f"--recipe {recipe}: no such file; expected a report recipe (recipes/reports/*.yaml)")
        return bundle_recipe(Path(recipe), Path(output), python, force, max_bytes, on_entry)
    timing = Timing()
    if iters is not None:
        timing.iters = ITERS.check(iters, "--iters")
    if loads is not None:
        timing.loads = LOADS.check(loads, "--loads")
    return bundle_artifacts([Path(a) for a in artifacts], Path(output), python, regenerate_seeded, timing, force,
                            max_bytes, on_entry)


def report_from_bundle(results: str | Path, output: str | Path, *, force: bool = False) -> list[Path]:
    """The report (Markdown, JSON, CSV, charts) of a recipe bundle's ``run.py`` results, into the folder ``output``."""
    from psdeploy.bundle.recipe import report_of_results
    from psdeploy.report import write_report

    path = Path(results)
    check_destination(Path(output), "-o", directory=True, force=force)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PsdeployError(f"--from-bundle-results {path}: unreadable ({exc.__class__.__name__}); expected the JSON "
                            f"a bundle's run.py wrote") from None
    if not isinstance(data, dict) or data.get("format") != "psdeploy.bundle-results/1":
        raise PsdeployError(f"--from-bundle-results {path}: not psdeploy.bundle-results/1 JSON (run.py's --json)")
    return write_report(report_of_results(data, str(path)), Path(output), force=force)
