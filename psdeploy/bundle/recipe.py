"""A report recipe's TVM cases as one bundle, and the bundle's results as the report.

The report of a machine psdeploy cannot run on (a GPU server with no TVM) is measured in two halves:
here, ``psdeploy bundle --recipe R`` builds every case the recipe times on its TVM backends, seeded
weights regenerated there, one interleaved group per backend and report group, as ``psdeploy report``
times them; there, ``run.py`` checks and times them; here again, ``psdeploy report --from-bundle-results``
turns its JSON into the report's Markdown, JSON, CSV and charts.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from psdeploy.backends.tvm import WINOGRAD_TILES, TvmBackend
from psdeploy.bundle.entry import EntrySpec
from psdeploy.errors import PsdeployError
from psdeploy.export import AUTO
from psdeploy.report import ReportConfig, ReportData, load_report_config
from psdeploy.report.config import TORCH, platform
from psdeploy.report.run import Measurement, planned
from psdeploy.search.prepare import export_case

RESULT_FIELDS = ("table", "backend", "group", "case", "batch", "role", "lowering")


def _name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)).strip("_")


def recipe_specs(config: ReportConfig, scratch: Path) -> tuple[list[EntrySpec], list[str]]:
    """Every TVM case of the recipe as a bundle entry, and what was left out, with why."""
    specs, left_out = [], []
    for backend_name in config.backends:
        if backend_name == TORCH:
            left_out.append("torch (eager PyTorch: run.py carries TVM modules only)")
            continue
        where = platform(backend_name, config)
        if where.target is None or where.target.backend != "tvm":
            left_out.append(f"{backend_name} (not TVM: bundles carry TVM modules)")
            continue
        layout = TvmBackend().conv_layout(where.target, where.options)
        for group, cases in planned(config, where):
            for module_case in cases:
                case = module_case.case
                if case.lowering == AUTO:
                    left_out.append(f"{backend_name} {group.label} {case.label} (auto is searched on the target)")
                    continue
                onnx_path = export_case(module_case.module, group.shape, scratch)
                twin = export_case(module_case.module, (1, *group.shape[1:]), scratch) if group.batch > 1 else None
                describe = {"table": group.table, "backend": backend_name, "report_group": group.label,
                            "case": case.label, "batch": group.batch, "role": case.role.value, "lowering": case.lowering,
                            "winograd": where.options.winograd, "layout": str(layout)}
                specs.append(EntrySpec(_name(backend_name, group.label, case.label), f"{backend_name} {group.label}",
                                       onnx_path, group.shape, where.target, where.options, layout,
                                       WINOGRAD_TILES[where.options.winograd], None, describe=describe,
                                       twin_onnx=twin))
    if not specs:
        raise PsdeployError(f"{config.source}: no TVM case to bundle (its backends: {', '.join(config.backends)})")
    return specs, left_out


def report_of_results(results: dict, source: str) -> ReportData:
    """``run.py``'s results of a recipe bundle as the report ``psdeploy report`` would have written there."""
    recipe = (results.get("report") or {}).get("recipe")
    if not recipe:
        raise PsdeployError(f"{source}: results of a bundle built without --recipe; only a report recipe's bundle "
                            f"gives report tables")
    config = load_report_config(_recipe_file(recipe, source), results["environment"].get("threads"))
    data = ReportData(config, results["environment"], left_out=list(results["report"].get("left_out", [])))
    for a in results["artifacts"]:
        if "stats" not in a:
            raise PsdeployError(f"{source}: {a['name']} was checked, not timed (run.py --check-only); run it again "
                                f"without --check-only")
        data.measurements.append(Measurement(
            a["table"], a["backend"], a["report_group"], a["case"], a["batch"], a["stats"], a["ratio"], a["ratio_p10"],
            a["ratio_p90"], a["parity"]["rel_err"], role=a["role"], lowering=a["lowering"],
            load_ratios=a["load_ratios"], load_medians_ms=a["load_medians_ms"]))
    return data


def _recipe_file(recipe: dict, source: str) -> Path:
    """The recipe the bundle was built from, unchanged (its tables' shapes and names come from it)."""
    path = Path(recipe["path"])
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != recipe["sha256"]:
        raise PsdeployError(f"{source}: the bundle was built from the recipe {path}, which is "
                            f"{'changed' if path.is_file() else 'not here'}; report on the machine it was built on")
    return path
