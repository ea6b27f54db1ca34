"""The API of deploy bundles: artifacts (or a GPU report recipe's cases) into one folder a server runs alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from psdeploy.bounds import ITERS, LOADS
from psdeploy.bundle import BundleResult, Timing, bundle_artifacts


def bundle(artifacts: list[str | Path], output: str | Path, *, python: str | None = None,
           regenerate_seeded: bool = False, iters: int | None = None, loads: int | None = None,
           force: bool = False, on_entry: Callable[[str], None] | None = None) -> BundleResult:
    """TVM artifacts rebuilt with their weights apart, TVM's runtime for CPython ``python`` (default: this one)
    and ``run.py``, in the folder ``output`` (an existing one refused unless ``force``). ``regenerate_seeded``:
    ``seeded:`` artifacts' weights are drawn there from their seeds instead of shipped."""
    if not artifacts:
        from psdeploy.errors import PsdeployError

        raise PsdeployError("bundle: give at least one artifact directory")
    timing = Timing()
    if iters is not None:
        timing.iters = ITERS.check(iters, "--iters")
    if loads is not None:
        timing.loads = LOADS.check(loads, "--loads")
    return bundle_artifacts([Path(a) for a in artifacts], Path(output), python, regenerate_seeded, timing, force,
                            on_entry)
