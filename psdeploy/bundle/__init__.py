"""Deploy bundles: compiled TVM modules, their weights apart, TVM's runtime for the server's Python, one runner.

A bundle is one folder a GPU server (or any machine without a compiler, TVM or package index) runs with
``python DIR/run.py``: numpy and the bundle are all it needs. Its ``manifest.json`` lists every file
with its sha256; the runner loads nothing else (``runner.py``, copied in as ``run.py``). Written under
``psdeploy.fileio``'s rule: the folder appears whole, or not at all.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from psdeploy.bundle import runner
from psdeploy.bundle.entry import EntrySpec, add_entry
from psdeploy.bundle.runtime import add_runtime, check_python
from psdeploy.errors import PsdeployError
from psdeploy.fileio import atomic_output, check_destination

RUNNER = "run.py"
RECIPE_BUDGET_S = 360.0  # a recipe bundle's timing there: with checks and loads, run.py ends within 8 minutes
CATEGORIES = (("modules", "module.so"), ("weights", "weights.npz"), ("expected outputs", "expected.npz"),
              ("TVM runtime", "runtime/lib"), ("tvm_ffi and typing_extensions wheels", ".whl"), ("runner", RUNNER))


@dataclass
class Timing:
    """The runner's default timing (``run.py --iters/--loads/--warmup`` override it there)."""

    iters: int = 50
    loads: int = 3
    warmup: int = 10
    max_warmup: int = 100
    block: int = 2
    budget_s: float | None = None  # wall-clock seconds for all the timing there (rounds cut to fit); None: no limit


@dataclass
class BundleResult:
    output: Path
    manifest: dict
    sizes: list[tuple[str, int]]  # (what, bytes), largest first
    total_bytes: int
    notes: list[str] = field(default_factory=list)


def _category(name: str) -> str:
    for what, marker in CATEGORIES:
        if marker in name:
            return what
    return "other"


def sizes_of(files: dict[str, dict]) -> list[tuple[str, int]]:
    totals: dict[str, int] = {}
    for name, entry in files.items():
        totals[_category(name)] = totals.get(_category(name), 0) + entry["bytes"]
    return sorted(totals.items(), key=lambda kv: -kv[1])


def write_bundle(name: str, specs: Callable[[Path], list[EntrySpec]], output: Path, python: str | None = None,
                 timing: Timing | None = None, max_bytes: int | None = None, force: bool = False,
                 extra: dict | None = None, on_entry: Callable[[str], None] | None = None) -> BundleResult:
    """Build every entry ``specs(scratch)`` gives into a bundle at ``output``; refused (nothing written) when
    over ``max_bytes``."""
    python = check_python(python or f"{sys.version_info.major}.{sys.version_info.minor}")
    check_destination(output, "-o", directory=True, force=force)
    with (tempfile.TemporaryDirectory(prefix="psdeploy-bundle-") as scratch,
          atomic_output(output, "-o", directory=True, force=force) as stage):
        entries = []
        seen: set[str] = set()
        for salt, spec in enumerate(specs(Path(scratch))):
            if spec.name in seen:
                raise PsdeployError(f"{spec.name}: two entries of the bundle have this name; expected distinct names")
            seen.add(spec.name)
            if on_entry:
                on_entry(spec.name)
            entries.append(add_entry(stage, spec, salt))
            if spec.check:
                spec.check(entries[-1])
        runtime = add_runtime(stage, python, cuda=any(e["device"] == "cuda" for e in entries))
        shutil.copy2(runner.__file__, stage / RUNNER)
        listed = [*(v for k, v in runtime.items() if k != "wheels"), *runtime["wheels"],
                  *(e[k] for e in entries for k in ("module", "expected")),
                  *(e["weights"]["file"] for e in entries if "file" in e["weights"])]
        files = {n: {"sha256": runner.file_digest(stage / n), "bytes": (stage / n).stat().st_size}
                 for n in sorted(listed)}
        total = sum(f["bytes"] for f in files.values()) + (stage / RUNNER).stat().st_size
        manifest = {"format": runner.FORMAT, "name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "psdeploy": metadata.version("psdeploy"), "python": python,
                    "versions": {p: metadata.version(p) for p in ("apache-tvm", "apache-tvm-ffi")},
                    "runtime": runtime, "timing": vars(timing or Timing()), "files": files,
                    "artifacts": entries, **(extra or {})}
        (stage / runner.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        total += (stage / runner.MANIFEST).stat().st_size
        sizes = sizes_of(files) + [("runner", (stage / RUNNER).stat().st_size)]
        if max_bytes is not None and total > max_bytes:
            taken = ", ".join(f"{what} {size / 2**20:.1f} MiB" for what, size in sizes)
            raise PsdeployError(f"-o {output}: the bundle is {total / 2**20:.1f} MiB, over its limit of "
                                f"{max_bytes / 2**20:.0f} MiB ({taken})")
    return BundleResult(output, manifest, sizes, total)


def bundle_artifacts(directories: list[Path], output: Path, python: str | None = None,
                     regenerate_seeded: bool = False, timing: Timing | None = None, force: bool = False,
                     max_bytes: int | None = None, on_entry: Callable[[str], None] | None = None) -> BundleResult:
    """``psdeploy bundle ARTIFACT... -o DIR``: each artifact rebuilt with its weights apart, timed as one group
    (ratios to the first, as ``psdeploy bench``)."""
    from psdeploy.bundle.artifacts import artifact_spec

    for d in directories:
        if not d.is_dir():
            raise PsdeployError(f"{d}: not an artifact directory; expected the -o of 'psdeploy compile'")
    names = _names(directories)
    return write_bundle(output.name, lambda scratch: [artifact_spec(d, n, scratch, regenerate_seeded)
                                                      for d, n in zip(directories, names)],
                        output, python, timing, max_bytes, force, on_entry=on_entry)


def bundle_recipe(recipe: Path, output: Path, python: str | None = None, force: bool = False,
                  max_bytes: int | None = None, on_entry: Callable[[str], None] | None = None) -> BundleResult:
    """``psdeploy bundle --recipe R -o DIR``: every TVM case the report recipe times, seeded weights regenerated
    there, each report group one interleaved group; ``psdeploy report --from-bundle-results`` reads its results."""
    from psdeploy.bundle.recipe import recipe_specs
    from psdeploy.report import load_report_config

    config = load_report_config(recipe, None)
    timing = Timing(config.iters, config.loads, config.warmup, config.max_warmup, budget_s=RECIPE_BUDGET_S)
    left_out: list[str] = []
    torch: list[dict] = []

    def specs(scratch: Path) -> list[EntrySpec]:
        entries, torch_entries, skipped = recipe_specs(config, scratch)
        torch.extend(torch_entries)
        left_out.extend(skipped)
        return entries

    report = {"recipe": {"path": str(recipe.resolve()), "sha256": runner.file_digest(recipe)}, "left_out": left_out}
    return write_bundle(config.name, specs, output, python, timing, max_bytes, force,
                        {"report": report, "torch": torch}, on_entry)


def _names(directories: list[Path]) -> list[str]:
    """Each artifact's folder name, numbered where two share one."""
    names: list[str] = []
    for d in directories:
        base = d.resolve().name
        names.append(base if base not in names else f"{base}-{sum(n.startswith(base) for n in names) + 1}")
    return names


__all__ = ["BundleResult", "Timing", "bundle_artifacts", "bundle_recipe", "sizes_of", "write_bundle"]
